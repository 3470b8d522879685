"""Resumable out-of-core runs: SIGKILL mid-run, journal checks, start-over."""

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.outofcore import journal as J
from ntkfast.backends import compiled_available
from ntkfast.backends.reference_engine import ReferenceEngine

NET = nk.MLP(depth=3, activation="relu", w_std=1.0, b_std=0.1)
KW = dict(backend="reference", tile=50, n_jobs=1)

SCRIPT = """
import sys, numpy as np, ntkfast as nk
X = np.load(sys.argv[1], mmap_mode="r")
nk.MLP(depth=3, activation="relu", w_std=1.0, b_std=0.1).ntk(
    X, out=sys.argv[2], backend="reference", tile=20, n_jobs=1)
"""


def journal_blocks(path):
    try:
        return len(J.read(J.journal_path(path))[1])
    except (FileNotFoundError, J.JournalMismatch, IndexError):
        return 0


@pytest.fixture
def X(tmp_path):
    X = np.random.default_rng(3).standard_normal((600, 16))
    np.save(tmp_path / "X.npy", X)
    return X


def interrupt_after(monkeypatch, n_calls):
    """Make the engine fail after n_calls blocks (a crash mid-run)."""
    real = ReferenceEngine.fill
    calls = {"n": 0}

    def fill(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > n_calls:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(ReferenceEngine, "fill", fill)
    return calls


def test_sigkill_then_resume_is_bit_identical(tmp_path, X, monkeypatch):
    out = str(tmp_path / "K.npy")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(nk.__file__)))
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "X.npy"), out],
                            env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while journal_blocks(out) < 20 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    total = 30 * 31 // 2                                       # 600/20 bands, upper triangle
    done = journal_blocks(out)
    assert 20 <= done < total
    assert not os.path.exists(out) and os.path.exists(out + ".partial")

    calls = {"n": 0}
    real = ReferenceEngine.fill

    def counting(self, *a, **k):
        calls["n"] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(ReferenceEngine, "fill", counting)
    kw = dict(KW, tile=20)
    res = NET.ntk(X, out=out, **dict(kw, n_jobs=2))            # resume (n_jobs may change)
    assert calls["n"] == total - done                          # only the missing blocks
    fresh = NET.ntk(X, out=str(tmp_path / "fresh.npy"), **kw)
    assert np.array_equal(np.load(out), np.load(tmp_path / "fresh.npy"))
    assert np.array_equal(res, fresh)
    assert sorted(os.listdir(tmp_path)) == ["K.npy", "X.npy", "fresh.npy"]
    with open(out, "rb") as f1, open(tmp_path / "fresh.npy", "rb") as f2:
        assert f1.read() == f2.read()                          # the same file, byte for byte


def test_interrupted_pair_resumes(tmp_path, X, monkeypatch):
    Z = X[:300]
    outs = (str(tmp_path / "S.npy"), str(tmp_path / "T.npy"))
    interrupt_after(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt):
        NET.kernels(X, Z, out=outs, **KW)
    assert not any(os.path.exists(p) for p in outs)
    header, done = J.read(outs[0] + J.SUFFIX)
    assert len(done) == 7
    monkeypatch.undo()
    ks = NET.kernels(X, Z, out=outs, **KW)
    ref = NET.kernels(X, Z, **KW)
    assert np.array_equal(ks.nngp, ref.nngp) and np.array_equal(ks.ntk, ref.ntk)


@pytest.mark.parametrize("change,field", [
    (dict(net=nk.MLP(depth=2, b_std=0.1)), "network"),
    (dict(X=True), "X"),
    (dict(kw=dict(tile=64)), "tile"),
    (dict(kw=dict(backend="auto")), "backend"),
    (dict(kw=dict(dtype=np.float32)), "dtype"),
])
def test_journal_mismatch_is_a_clear_error(tmp_path, X, monkeypatch, change, field):
    if change.get("kw", {}).get("backend") == "auto" and not compiled_available():
        pytest.skip("backend='auto' is the reference backend without the compiled engine")
    out = str(tmp_path / "K.npy")
    interrupt_after(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        NET.ntk(X, out=out, **KW)
    monkeypatch.undo()
    before = open(out + ".partial", "rb").read()
    net = change.get("net", NET)
    X2 = X + 1e-9 if change.get("X") else X
    kw = dict(KW, **change.get("kw", {}))
    with pytest.raises(ValueError, match=f"different arguments .*{field}") as info:
        net.ntk(X2, out=out, **kw)
    msg = str(info.value)
    assert "resume=False" in msg and "--no-resume" in msg and ".partial" in msg
    assert open(out + ".partial", "rb").read() == before       # untouched, never mixed
    assert not os.path.exists(out)
    res = net.ntk(X2, out=out, resume=False, **kw)             # start over
    assert np.array_equal(res, net.ntk(X2, **kw))


def test_torn_journal_line_is_ignored(tmp_path, X, monkeypatch):
    out = str(tmp_path / "K.npy")
    interrupt_after(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        NET.ntk(X, out=out, **KW)
    monkeypatch.undo()
    with open(out + J.SUFFIX, "a") as f:
        f.write("10")                                          # a write cut by a kill
    assert len(J.read(out + J.SUFFIX)[1]) == 4
    assert np.array_equal(NET.ntk(X, out=out, **KW), NET.ntk(X, **KW))


def test_corrupt_journal_is_an_error(tmp_path, X, monkeypatch):
    out = str(tmp_path / "K.npy")
    interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        NET.ntk(X, out=out, **KW)
    monkeypatch.undo()
    with open(out + J.SUFFIX, "w") as f:
        f.write("garbage\n")
    with pytest.raises(ValueError, match="resume=False"):
        NET.ntk(X, out=out, **KW)
    NET.ntk(X, out=out, resume=False, **KW)
    assert os.listdir(tmp_path) == ["K.npy"] or sorted(os.listdir(tmp_path)) == \
        ["K.npy", "X.npy"]


def test_locked_journal_refuses_a_second_writer(tmp_path, X, monkeypatch):
    fcntl = pytest.importorskip("fcntl")
    out = str(tmp_path / "K.npy")
    interrupt_after(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        NET.ntk(X, out=out, **KW)
    monkeypatch.undo()
    fd = os.open(out + J.SUFFIX, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        for resume in (True, False):
            with pytest.raises(OSError, match="another process") as info:
                NET.ntk(X, out=out, resume=resume, **KW)
            assert info.value.errno == errno.EBUSY
    finally:
        os.close(fd)
    assert os.path.exists(out + ".partial")


def test_completed_run_leaves_only_the_file_and_reruns_cleanly(tmp_path, X):
    out = tmp_path / "K.npy"
    a = np.array(NET.ntk(X, out=out, **KW))
    b = np.array(NET.ntk(X, out=out, **KW))                    # overwrite, no journal left
    assert np.array_equal(a, b) and sorted(os.listdir(tmp_path)) == ["K.npy", "X.npy"]
