"""Serial networks out of core: ``out="K.npy"`` through the tiling layer, interrupted and
resumed bit for bit, with the network (and its input shape) in the journal key."""

import os

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.outofcore import journal as J

NET = nk.serial(nk.Conv((3, 3), w_std=1.3, b_std=0.1), nk.ReLU(),
                nk.AvgPool((2, 2), strides=(2, 2)), nk.Conv((2, 2), padding="VALID"),
                nk.Erf(), nk.GlobalAvgPool(), nk.Dense(b_std=0.2))
#: the engine backend='auto' runs NET on (6, 6, 2) images (the compiled network engine
#: where it is built, else the reference engine)
ENGINE = type(NET._engine_and_spec((6, 6, 2))[0])


@pytest.fixture
def X():
    return np.random.default_rng(5).standard_normal((23, 6, 6, 2))


def test_file_output_equals_in_ram(tmp_path, X):
    ref = NET.kernels(X, tile=8)
    out = (str(tmp_path / "S.npy"), str(tmp_path / "T.npy"))
    got = NET.kernels(X, out=out, tile=8)
    assert np.array_equal(np.load(out[0]), ref.nngp)
    assert np.array_equal(np.load(out[1]), ref.ntk) and np.array_equal(got.ntk, ref.ntk)
    Z = X[:7] * 0.5
    np.testing.assert_array_equal(NET.ntk(X, Z, out=str(tmp_path / "XZ.npy"), tile=8),
                                  NET.ntk(X, Z, tile=8))
    assert sorted(os.listdir(tmp_path)) == ["S.npy", "T.npy", "XZ.npy"]


def test_interrupted_then_resumed_is_bit_identical(tmp_path, X, monkeypatch):
    out = str(tmp_path / "K.npy")
    real = ENGINE.fill
    calls = {"n": 0}

    def interrupting(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 4:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(ENGINE, "fill", interrupting)
    with pytest.raises(KeyboardInterrupt):
        NET.ntk(X, out=out, tile=6, n_jobs=1)
    _, done = J.read(out + J.SUFFIX)
    assert 1 <= len(done) <= 4 and not os.path.exists(out)

    calls["n"] = -10 ** 9  # no more interruptions; count the blocks the resume fills
    res = NET.ntk(X, out=out, tile=6, n_jobs=1)
    total = 4 * 5 // 2  # 23 rows in 4 bands of 6: the upper triangle
    assert calls["n"] + 10 ** 9 == total - len(done)
    assert np.array_equal(res, NET.ntk(X, tile=6))


def test_other_network_or_shape_is_not_resumed(tmp_path, X, monkeypatch):
    out = str(tmp_path / "K.npy")
    real = ENGINE.fill
    calls = {"n": 0}

    def interrupting(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(ENGINE, "fill", interrupting)
    with pytest.raises(KeyboardInterrupt):
        NET.ntk(X, out=out, tile=6, n_jobs=1)
    monkeypatch.undo()
    other = nk.serial(*NET.layers[:-1], nk.Dense(b_std=0.3))
    with pytest.raises(ValueError, match="network"):
        other.ntk(X, out=out, tile=6)
    with pytest.raises(ValueError, match="X"):
        NET.ntk(X.reshape(23, 4, 9, 2), out=out, tile=6)
