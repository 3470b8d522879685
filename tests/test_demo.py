"""`ntkfast demo` in quick mode: accuracy, figures written, argument handling."""

import argparse

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from ntkfast.apps import demo  # noqa: E402

FIGURES = {"one_d", "kernel_convergence", "kernel_change", "training_vs_ntk", "spectrum",
           "eigen_dynamics", "kernel_heatmap"}


def test_quick_demo_writes_figures(tmp_path, capsys):
    out = tmp_path / "figs"
    res = demo.run_demo(out_dir=str(out), width=128, depth=2, quick=True, progress=True)
    assert set(res["figures"]) == FIGURES
    for path in res["figures"].values():
        data = open(path, "rb").read()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, path
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{k}.png" for k in FIGURES)
    assert res["accuracy"] > 0.9
    assert -0.8 < res["ntk_slope"] < -0.3
    assert res["timings"]["ntk"] > 0 and res["timings"]["total"] >= res["timings"]["ntk"]
    assert len(res["kernel_change"]) == len(res["widths_bc"])
    assert res["seeds_bc"] == [demo._seeds_for(w, demo._settings(True, 128))
                               for w in res["widths_bc"]]
    text = capsys.readouterr().out
    assert "test accuracy" in text and "slope" in text
    # a line when each long stage starts (before its result line)
    for start in ("digits: NTK of", "spectrum:", "1-D picture: training", "(a) kernels at",
                  "(b)+(c) training:", "(d) eigendirections: one network"):
        assert start in text, start


def test_training_by_width_pads_seeds_with_nan():
    from ntkfast import MLP, experiments as E
    data = E.load_digits_split(8, 6, 0)
    net = MLP(depth=1, activation="relu", w_std=1.5, b_std=1.0)
    res = demo.training_by_width(net, data, [4, 8], 5, [3, 1], seed=0)
    assert res["kernel_change"].shape[:2] == (2, 3)
    assert np.isnan(res["test_rel"][1, 1:]).all() and not np.isnan(res["test_rel"][1, 0]).any()
    assert not np.isnan(res["test_rel"][0]).any()
    # the first width's runs are the same as training_experiments' with 3 seeds
    ref = E.training_experiments(net, data["X_train"], data["y_train"],
                                 data["X_test"], [4], steps=5, n_seeds=3, seed=0,
                                 discrete=True, center=True)
    np.testing.assert_array_equal(res["test_rel"][0], ref["test_rel"][0])
    assert np.isfinite(res["test_rel_slope"]) and np.isfinite(res["change_slope"])


def test_normalized_kernel_and_sort_by_class():
    from ntkfast import plotting as P
    rng = np.random.default_rng(0)
    F = rng.standard_normal((6, 4)) * rng.uniform(0.1, 10, (6, 1))
    K = F @ F.T
    Kn = P.normalized_kernel(K)
    cos = (F / np.linalg.norm(F, axis=1, keepdims=True)) @ \
        (F / np.linalg.norm(F, axis=1, keepdims=True)).T
    np.testing.assert_allclose(Kn, cos, atol=1e-14)
    np.testing.assert_allclose(np.diag(Kn), 1.0, atol=1e-15)
    K0 = K.copy()
    K0[2, :] = K0[:, 2] = 0.0        # a zero-norm input: its row and column are 0
    assert not np.isnan(P.normalized_kernel(K0)).any()
    with pytest.raises(ValueError, match="K"):
        P.normalized_kernel(np.ones((2, 3)))
    labels = np.array([2, 0, 1, 0, 2, 1])
    Ks, ls, order = P.sort_by_class(K, labels)
    assert ls.tolist() == [0, 0, 1, 1, 2, 2] and order.tolist() == [1, 3, 2, 5, 0, 4]
    np.testing.assert_array_equal(Ks, K[np.ix_(order, order)])


def test_plots_draw_into_a_given_figure(tmp_path):
    from matplotlib.figure import Figure
    from ntkfast import plotting as P
    rng = np.random.default_rng(1)
    F = rng.standard_normal((12, 3))
    fig = Figure()
    res = dict(theta=F @ F.T, labels=np.arange(12) % 3, title="x")
    assert P.plot_kernel_heatmap(res, fig=fig) is fig and len(fig.axes) >= 2
    path = P.plot_kernel_heatmap(res, tmp_path / "k.png")
    assert open(path, "rb").read(4) == b"\x89PNG"


def test_kernel_regression_interpolates():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((5, 5))
    K, Y = A @ A.T + np.eye(5), rng.standard_normal((5, 2))
    np.testing.assert_allclose(demo.kernel_regression(K, K, Y, ridge=0.0), Y, atol=1e-10)


def test_arguments_and_main(monkeypatch):
    parser = demo.add_demo_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--out", "d", "--width", "64", "--depth", "3", "--quick"])
    assert (args.out, args.width, args.depth, args.quick) == ("d", 64, 3, True)
    defaults = parser.parse_args([])
    assert (defaults.out, defaults.width, defaults.depth, defaults.quick) == \
        ("ntkfast-demo", 512, 2, False)
    seen = {}
    monkeypatch.setattr(demo, "run_demo", lambda **kw: seen.update(kw))
    assert demo.main_from_args(args) == 0
    assert seen["out_dir"] == "d" and seen["width"] == 64 and seen["quick"] is True
    with pytest.raises(SystemExit, match="--width"):
        demo.main_from_args(parser.parse_args(["--width", "0"]))


def test_bad_arguments_name_them(tmp_path):
    with pytest.raises(ValueError, match="width"):
        demo.run_demo(out_dir=str(tmp_path), width=0, quick=True, progress=False)
    with pytest.raises(ValueError, match="depth"):
        demo.run_demo(out_dir=str(tmp_path), depth=-1, quick=True, progress=False)
    with pytest.raises(ValueError, match="n_train"):
        demo.run_demo(out_dir=str(tmp_path), n_train=1797, quick=True, progress=False)
