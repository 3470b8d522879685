"""The `ntkfast` command line, in-process (main(argv)) and as a subprocess."""

import os
import subprocess
import sys

import numpy as np
import pytest

import ntkfast as nk
from ntkfast import _defaults
from ntkfast.apps.cli import main

#: the network `ntkfast gram` computes when no MLP option is given
APP = dict(depth=_defaults.DEPTH, w_std=_defaults.W_STD, b_std=_defaults.B_STD)



@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(7)
    X = rng.standard_normal((260, 9))
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    np.savetxt(tmp_path / "Z.csv", X[:40], delimiter=",", header="a,b,c,d,e,f,g,h,i",
               comments="")
    np.savetxt(tmp_path / "Z.txt", X[:40])
    bad = X.copy()
    bad[5, 2] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    return tmp_path, X


def run(args, cwd):
    """The CLI in a subprocess, importing the same (installed) ntkfast as this process."""
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(nk.__file__)))
    return subprocess.run([sys.executable, "-m", "ntkfast.apps.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_gram_subprocess_roundtrip(files):
    tmp, X = files
    res = run(["gram", "X.npy", "-o", "K.npy", "--depth", "3", "--activation", "relu",
               "--w-std", "1.5", "--b-std", "0.1", "--tile", "64", "--jobs", "1"], tmp)
    assert res.returncode == 0, res.stderr
    assert "wrote" in res.stdout and res.stderr == ""           # no bar when not a tty
    net = nk.MLP(depth=3, activation="relu", w_std=1.5, b_std=0.1)
    K = np.load(tmp / "K.npy")
    assert K.dtype == np.float32
    assert np.array_equal(K, net.ntk(X.astype(np.float32), tile=64))
    assert sorted(os.listdir(tmp)) == ["K.npy", "K.npy.ntkfast.json", "X.npy", "Z.csv",
                                       "Z.txt", "bad.npy"]


def test_gram_in_process_both_and_text_inputs(files):
    tmp, X = files
    out = str(tmp / "G.npy")
    rc = main(["gram", str(tmp / "X.npy"), str(tmp / "Z.csv"), "-o", out, "--get", "both",
               "--dtype", "float64", "--parameterization", "standard", "--width", "64",
               "--b-std", "none", "--depth", "2", "-q", "--no-progress"])
    assert rc == 0
    net = nk.MLP(depth=2, parameterization="standard", width=64)
    ref = net.kernels(X.astype(np.float32).astype(np.float64), X[:40])
    assert np.allclose(np.load(tmp / "G_nngp.npy"), ref.nngp, rtol=1e-12)
    assert np.allclose(np.load(tmp / "G_ntk.npy"), ref.ntk, rtol=1e-12)
    rc = main(["gram", str(tmp / "Z.txt"), "-o", str(tmp / "S.npy"), "-o", str(tmp / "T.npy"),
               "--get", "both", "-q"])
    assert rc == 0
    assert np.allclose(np.load(tmp / "T.npy"), nk.MLP(**APP).ntk(X[:40]), rtol=1e-12)


def test_no_resume_flag_and_progress(files, capsys):
    tmp, _ = files
    args = ["gram", str(tmp / "X.npy"), "-o", str(tmp / "K.npy"), "--tile", "64"]
    assert main(args + ["--progress"]) == 0
    assert "blocks" in capsys.readouterr().err
    assert main(args + ["--no-resume", "--overwrite", "-q"]) == 0


@pytest.mark.parametrize("args,needle", [
    (["gram", "missing.npy", "-o", "K.npy"], "X: file 'missing.npy' not found"),
    (["gram", "X.npy", "nope.csv", "-o", "K.npy"], "Z: file 'nope.csv' not found"),
    (["gram", "X.npy", "-o", "K.npy", "--activation", "no_such_act"], "activation: unknown"),
    (["gram", "bad.npy", "-o", "K.npy"], "X: row 5 contains NaN"),
    (["gram", "X.npy", "-o", "K.npy", "--depth", "-1"], "depth: must be >= 0"),
    (["gram", "X.npy", "-o", "K.npy", "--tile", "0"], "tile: must be >= 1"),
    (["gram", "X.npy", "-o", "A.npy", "-o", "B.npy"], "-o/--out: --get ntk writes one"),
    (["gram", "X.npy", "-o", "K.txt"], "-o/--out: 'K.txt' must end in .npy"),
    (["gram", "X.npy", "-o", "no/dir/K.npy"], "out: directory"),
    (["gram", "X.npy", "-o", "K.npy", "--parameterization", "standard"], "width:"),
])
def test_errors_are_messages_not_tracebacks(files, capsys, args, needle, monkeypatch):
    tmp, _ = files
    monkeypatch.chdir(tmp)
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("ntkfast: error: ") and needle in err and "Traceback" not in err


def test_bad_input_subprocess_exit_code(files):
    tmp, _ = files
    res = run(["gram", "bad.npy", "-o", "K.npy"], tmp)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "ntkfast: error: X: row 5" in res.stderr
    res = run(["gram", "X.npy", "-o", "K.npy", "--dtype", "float16"], tmp)
    assert res.returncode == 2 and "--dtype" in res.stderr       # argparse usage error


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as info:
        main(["gram", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "ntkfast gram X.npy -o K.npy" in out


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"ntkfast {nk.__version__}" in out
    assert "compiled backend:" in out and "BLAS:" in out and "OpenMP" in out
    from ntkfast.outofcore.tile_plan import default_budget
    assert (f"{default_budget() // 2**20} MiB in RAM, "
            f"{default_budget(to_file=True) // 2**20} MiB for .npy file outputs") in out


def test_demo_missing_module_is_a_clear_message(capsys):
    try:
        import ntkfast.apps.demo  # noqa: F401
    except ModuleNotFoundError:
        assert main(["demo"]) == 2
        assert "ntkfast.apps.demo is missing" in capsys.readouterr().err
    else:
        with pytest.raises(SystemExit) as info:
            main(["demo", "--help"])
        assert info.value.code == 0


# -- issue 17: existing outputs and input files are not overwritten -------------------
def _gram(tmp, *extra):
    return main(["gram", str(tmp / "X.npy"), "-o", str(tmp / "K.npy"), "--tile", "64",
                 "--backend", "reference", "--no-progress", *extra])


def test_output_never_overwrites_an_input(files, capsys, monkeypatch):
    """`ntkfast gram X.npy -o X.npy` replaced its own input."""
    tmp, X = files
    monkeypatch.chdir(tmp)
    np.save(tmp / "Z.npy", X[:7])
    os.symlink(tmp / "X.npy", tmp / "link.npy")
    before = np.load(tmp / "X.npy")
    for args in (["gram", "X.npy", "-o", "X.npy"],
                 ["gram", "X.npy", "-o", "./X.npy", "--overwrite"],
                 ["gram", "X.npy", "-o", "link.npy", "--overwrite"],
                 ["gram", "X.npy", "Z.npy", "-o", "S.npy", "-o", "Z.npy", "--get", "both",
                  "--overwrite"]):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert "is the input file" in err and "--overwrite never applies" in err, err
    assert np.array_equal(np.load(tmp / "X.npy"), before)
    assert np.array_equal(np.load(tmp / "Z.npy"), X[:7])
    assert not os.path.exists(tmp / "S.npy")


def test_existing_output_needs_overwrite(files, capsys):
    tmp, X = files
    (tmp / "K.npy").write_bytes(b"precious")
    assert _gram(tmp) == 1
    err = capsys.readouterr().err
    assert "K.npy: the output already exists" in err and "--overwrite" in err
    assert (tmp / "K.npy").read_bytes() == b"precious"
    assert _gram(tmp, "--overwrite", "-q") == 0
    ref = nk.MLP(**APP).ntk(X.astype(np.float32), backend="reference", tile=64)
    assert np.array_equal(np.load(tmp / "K.npy"), ref)


def test_same_command_again_is_reported_not_recomputed(files, capsys, monkeypatch):
    tmp, X = files
    assert _gram(tmp, "--depth", "2", "-q") == 0
    stamp = os.stat(tmp / "K.npy").st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(nk.MLP, "_compute", boom)
    assert _gram(tmp, "--depth", "2") == 0
    out = capsys.readouterr().out
    assert "K.npy already holds this kernel (same arguments); nothing to do; use " \
           "--overwrite to recompute" in out
    assert os.stat(tmp / "K.npy").st_mtime_ns == stamp
    # other arguments, or an output changed since: refused without --overwrite
    assert _gram(tmp, "--depth", "3") == 1
    assert "already exists" in capsys.readouterr().err
    K = np.load(tmp / "K.npy")
    np.save(tmp / "K.npy", K * 2)
    assert _gram(tmp, "--depth", "2") == 1
    assert "already exists" in capsys.readouterr().err
    monkeypatch.undo()
    assert _gram(tmp, "--depth", "3", "--overwrite", "-q") == 0
    ref = nk.MLP(**dict(APP, depth=3)).ntk(X.astype(np.float32), backend="reference",
                                           tile=64)
    assert np.array_equal(np.load(tmp / "K.npy"), ref)


@pytest.mark.parametrize("existing", [False, True])
def test_interrupted_run_resumes_without_overwrite(files, capsys, monkeypatch, existing):
    """A rerun of an interrupted run (fresh, or started with --overwrite over an older
    output) resumes: it is not refused for lack of --overwrite."""
    from ntkfast.backends.reference_engine import ReferenceEngine
    tmp, X = files
    if existing:
        assert _gram(tmp, "--depth", "4", "-q") == 0
    real = ReferenceEngine.fill
    calls = {"n": 0}

    def failing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(ReferenceEngine, "fill", failing)
    extra = ["--overwrite"] if existing else []
    assert _gram(tmp, "--depth", "2", *extra) == 130
    assert os.path.exists(tmp / "K.npy.partial")
    assert os.path.exists(tmp / "K.npy") == existing
    monkeypatch.setattr(ReferenceEngine, "fill", real)
    capsys.readouterr()
    assert _gram(tmp, "--depth", "2", "-q") == 0, capsys.readouterr().err
    ref = nk.MLP(**dict(APP, depth=2)).ntk(X.astype(np.float32), backend="reference",
                                           tile=64)
    assert np.array_equal(np.load(tmp / "K.npy"), ref)
    assert not os.path.exists(tmp / "K.npy.partial")
    assert _gram(tmp, "--depth", "2") == 0
    assert "nothing to do" in capsys.readouterr().out


# -- issue 18 item 6: --arch ---------------------------------------------------------
ARCH = "conv3x3-relu,avgpool2,conv3x3-relu,gap,dense-b0.1"


def test_gram_arch_with_input_shape(tmp_path, capsys):
    X = np.random.default_rng(3).standard_normal((9, 16))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "Z.npy", X[:4].reshape(4, 4, 4, 1))       # already images
    args = ["gram", str(tmp_path / "X.npy"), str(tmp_path / "Z.npy"), "-o",
            str(tmp_path / "K.npy"), "--arch", ARCH, "--input-shape", "4,4,1", "--get",
            "both", "--no-progress"]
    assert main(args) == 0, capsys.readouterr().err
    net = nk.serial(nk.Conv((3, 3)), nk.ReLU(), nk.AvgPool((2, 2), (2, 2)), nk.Conv((3, 3)),
                    nk.ReLU(), nk.GlobalAvgPool(), nk.Dense(b_std=0.1))
    ref = net.kernels(X.reshape(9, 4, 4, 1), X[:4].reshape(4, 4, 4, 1))
    np.testing.assert_allclose(np.load(tmp_path / "K_ntk.npy"), ref.ntk, rtol=1e-13)
    np.testing.assert_allclose(np.load(tmp_path / "K_nngp.npy"), ref.nngp, rtol=1e-13)
    record = __import__("json").load(open(tmp_path / "K_ntk.npy.ntkfast.json"))["run"]
    assert record["network"]["architecture"]["layers"][0]["filter_shape"] == [3, 3]
    assert record["network"]["input_shape"] == [4, 4, 1]
    capsys.readouterr()
    # the same kernel again, also written as a JSON file: nothing to do
    (tmp_path / "net.json").write_text(__import__("json").dumps(net.describe()))
    for arch in (ARCH, str(tmp_path / "net.json")):
        assert main(args[:6] + [arch] + args[7:]) == 0
        assert "already holds this kernel" in capsys.readouterr().out
    # another architecture or input shape: refused without --overwrite
    assert main(args[:6] + [ARCH.replace("b0.1", "b0.2")] + args[7:]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(args[:8] + ["2,8,1"] + args[9:]) == 1
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("extra, needle", [
    (["--arch", ARCH, "--input-shape", "3,3,1", "--depth", "2", "--b-std", "0.1"],
     "--arch: --depth, --b-std describe(s) an MLP and cannot be combined with --arch"),
    (["--input-shape", "3,3,1"], "--input-shape: only with --arch"),
    (["--arch", ARCH], "X holds vectors: give --input-shape H,W,C"),
    (["--arch", ARCH, "--input-shape", "2,2,2"], "cannot be reshaped to 2×2×2 = 8"),
    (["--arch", ARCH, "--input-shape", "3,x"], "--input-shape: expected positive integers"),
    (["--arch", "conv3x3-rleu,gap,dense", "--input-shape", "3,3,1"],
     "architecture: unknown layer 'rleu'"),
])
def test_gram_arch_errors(tmp_path, capsys, extra, needle):
    np.save(tmp_path / "X.npy", np.ones((4, 9)))
    assert main(["gram", str(tmp_path / "X.npy"), "-o", str(tmp_path / "K.npy"),
                 *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ntkfast: error: ") and needle in err, err
    assert not os.path.exists(tmp_path / "K.npy")


def test_gram_help_documents_the_grammar(capsys):
    with pytest.raises(SystemExit):
        main(["gram", "--help"])
    out = capsys.readouterr().out
    assert "--arch SPEC" in out and "--input-shape H,W,C" in out
    assert "architecture specs (--arch)" in out and "res(A)" in out and "myrtle5" in out
    assert out.count("--arch '") >= 2


# -- SIGTERM / Ctrl-C: how much is saved -----------------------------------------------
STOP_SCRIPT = """
import signal, sys, time
# the dispositions a terminal gives (a background job or a CI runner may start us with
# SIGINT ignored, and Python then never raises KeyboardInterrupt)
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
from ntkfast.backends.reference_engine import ReferenceEngine
from ntkfast.apps.cli import main
real, calls = ReferenceEngine.fill, [0]
def fill(self, *a, **k):
    calls[0] += 1
    if calls[0] == 6:
        print("filled 5", flush=True)
        time.sleep(60)                      # the signal arrives here
    return real(self, *a, **k)
ReferenceEngine.fill = fill
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig, status", [("SIGTERM", 143), ("SIGINT", 130)])
def test_stopped_gram_says_what_is_saved(tmp_path, sig, status):
    import select
    import signal
    X = np.random.default_rng(5).standard_normal((1100, 5))
    np.save(tmp_path / "X.npy", X)
    args = ["gram", "X.npy", "-o", "K.npy", "--backend", "reference", "--tile", "275",
            "--jobs", "1", "--b-std", "0.1", "--depth", "2"]        # 4 bands: 10 blocks
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(nk.__file__)),
               NTKFAST_DIRECT_IO="0")
    with subprocess.Popen([sys.executable, "-c", STOP_SCRIPT, *args], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            line = proc.stdout.readline() if ready else b""
            if line == b"filled 5\n":
                proc.send_signal(getattr(signal, sig))
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err = proc.stderr.read().decode()
    assert line == b"filled 5\n", err
    assert proc.returncode == status, err
    assert err == ("ntkfast: stopped; 5 of 10 blocks are saved; run the same command again "
                   "to resume\n"), err
    assert os.path.exists(tmp_path / "K.npy.partial") and not os.path.exists(tmp_path / "K.npy")
    if sig == "SIGTERM":                                   # and it resumes
        cwd = os.getcwd()
        try:
            os.chdir(tmp_path)
            assert main(args + ["-q", "--no-progress"]) == 0
        finally:
            os.chdir(cwd)
        ref = nk.MLP(2, b_std=0.1).ntk(X, backend="reference", tile=275)
        assert np.array_equal(np.load(tmp_path / "K.npy"), ref)


# -- errors in the CLI's own terms -----------------------------------------------------
def test_serve_without_its_extra_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "werkzeug", None)  # as if not installed
    assert main(["serve", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert 'pip install "ntkfast[serve]"' in err and "werkzeug" in err
    assert "No module named" not in err


@pytest.mark.parametrize("cmd", [["gram", "X.npy", "-o", "K.npy"], ["sweep", "iris"]])
def test_standard_parameterization_asks_for_width_in_cli_terms(files, capsys, monkeypatch,
                                                               cmd):
    monkeypatch.chdir(files[0])
    assert main(cmd + ["--parameterization", "standard"]) == 1
    err = capsys.readouterr().err
    assert "--width 512" in err and "MLP(" not in err and "width=" not in err


def test_gram_lists_every_backend(files, capsys, monkeypatch):
    from ntkfast.backends import BACKENDS
    with pytest.raises(SystemExit):
        main(["gram", "--help"])
    out = capsys.readouterr().out
    assert "{" + ",".join(BACKENDS) + "}" in out and "numba" in BACKENDS
    monkeypatch.chdir(files[0])
    # accepted by the parser; the library explains why ReLU does not run on numba
    assert main(["gram", "X.npy", "-o", "K.npy", "--backend", "numba"]) == 1
    assert "backend='numba'" in capsys.readouterr().err


def test_gram_defaults_are_the_applications_defaults(files):
    """`ntkfast gram` without MLP options is MLP(depth, w_std, b_std of ntkfast._defaults),
    chosen by bench/defaults_study.py (docs/defaults-study.md); --b-std none is MLP()."""
    tmp, X = files
    assert main(["gram", str(tmp / "X.npy"), "-o", str(tmp / "A.npy"), "-q"]) == 0
    assert np.array_equal(np.load(tmp / "A.npy"), nk.MLP(**APP).ntk(X.astype(np.float32)))
    assert _defaults.B_STD is not None  # the study's finding: a bias helps
    assert main(["gram", str(tmp / "X.npy"), "-o", str(tmp / "B.npy"), "-q", "--b-std", "none",
                 "--depth", "1", "--w-std", "1"]) == 0
    assert np.array_equal(np.load(tmp / "B.npy"), nk.MLP().ntk(X.astype(np.float32)))


def test_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["gram", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"(default: {_defaults.B_STD:g}" in out and f"(default: {_defaults.DEPTH})" in out
