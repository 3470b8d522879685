"""Faults of the out-of-core resume journal (issue 17): torn lines followed by more
interruptions, out-of-range / malformed / lying entries, corrupted blocks, old-format
journals, Custom activations across processes, SIGTERM."""

import math
import os
import select
import signal
import subprocess
import sys

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.outofcore import journal as J
from ntkfast.outofcore import tiling
from ntkfast.backends.reference_engine import ReferenceEngine
from test_resume import interrupt_after  # noqa: E402 - shared helper
from test_direct_io import direct_supported  # noqa: E402

NET = nk.MLP(depth=3, activation="relu", w_std=1.0, b_std=0.1)
KW = dict(backend="reference", tile=50, n_jobs=1)               # 600 rows: 78 blocks
N_BLOCKS = 12 * 13 // 2
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    [os.path.dirname(os.path.dirname(nk.__file__)), os.path.dirname(__file__)]))


@pytest.fixture
def X(tmp_path):
    X = np.random.default_rng(3).standard_normal((600, 16))
    np.save(tmp_path / "X.npy", X)
    return X


def counting(monkeypatch):
    calls = {"n": 0}
    real = ReferenceEngine.fill

    def fill(self, *a, **k):
        calls["n"] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(ReferenceEngine, "fill", fill)
    return calls


def interrupted(X, out, n, monkeypatch, net=NET, **kw):
    """Run until n blocks are filled, then stop as Ctrl-C would."""
    interrupt_after(monkeypatch, n)
    with pytest.raises(KeyboardInterrupt):
        net.ntk(X, out=out, **dict(KW, **kw))
    monkeypatch.undo()


def journal_text(out):
    with open(out + J.SUFFIX, "rb") as f:
        return f.read()


# -- (a) torn lines -------------------------------------------------------------------
def test_torn_line_then_second_interruption_never_joins_lines(tmp_path, X, monkeypatch):
    """A kill leaves '1' without its newline; the next run is interrupted too.  The
    torn fragment must not join the next entry ('1' + '4 …' = block 14)."""
    out = str(tmp_path / "K.npy")
    interrupted(X, out, 4, monkeypatch)
    with open(out + J.SUFFIX, "ab") as f:
        f.write(b"1")                                            # a torn append
    interrupted(X, out, 3, monkeypatch)                          # blocks 4, 5, 6
    data = journal_text(out)
    assert data.endswith(b"\n") and b"\n1" + b"4 " not in data
    assert sorted(J.read(out + J.SUFFIX)[1]) == list(range(7))
    calls = counting(monkeypatch)
    K = NET.ntk(X, out=out, **KW)
    assert calls["n"] == N_BLOCKS - 7
    assert np.array_equal(K, NET.ntk(X, **KW))


def test_open_existing_cuts_a_torn_tail(tmp_path):
    path = str(tmp_path / "j")
    j = J.Journal.create(path, "k", {"a": 1})
    j.mark([(0, (1,)), (1, (2,))])
    j.close()
    with open(path, "ab") as f:
        f.write(b"2 0000")
    j = J.Journal.open_existing(path)
    assert j.torn == b"2 0000" and set(j.done) == {0, 1}
    j.mark([(3, (0xABCDEF01,))])
    j.close()
    assert J.read(path)[1] == {0: (1,), 1: (2,), 3: (0xABCDEF01,)}
    with open(path, "rb") as f:
        assert f.read().endswith(b"\n1 00000002\n3 abcdef01\n")


# -- (b) damaged entries ----------------------------------------------------------------
def test_out_of_range_and_malformed_entries_warn_and_are_recomputed(tmp_path, X,
                                                                     monkeypatch):
    out = str(tmp_path / "K.npy")
    interrupted(X, out, 4, monkeypatch)
    with open(out + J.SUFFIX, "ab") as f:
        f.write(b"9999 00000000\nbogus\n-3 00000000\n2 00000000 00000000\n")
    calls = counting(monkeypatch)
    with pytest.warns(UserWarning, match=r"journal .* is damaged: 4 entries .*9999"):
        K = NET.ntk(X, out=out, **KW)
    assert calls["n"] == N_BLOCKS - 3          # block 2's entry had two checksums
    assert np.array_equal(K, NET.ntk(X, **KW))


def test_journal_listing_every_block_does_not_finish_an_incomplete_file(tmp_path, X,
                                                                        monkeypatch):
    """Entries for blocks that were never written fail their checksum: computed again,
    never renamed to K.npy as they are (zeros)."""
    out = str(tmp_path / "K.npy")
    interrupted(X, out, 4, monkeypatch)
    with open(out + J.SUFFIX, "ab") as f:
        f.write("".join(f"{i} 00000000\n" for i in range(4, N_BLOCKS)).encode())
    calls = counting(monkeypatch)
    with pytest.warns(UserWarning, match=f"{N_BLOCKS - 4} of the {N_BLOCKS} blocks .* do "
                                         "not hold the values"):
        K = NET.ntk(X, out=out, **KW)
    assert calls["n"] == N_BLOCKS - 4
    assert np.array_equal(K, NET.ntk(X, **KW))
    assert sorted(os.listdir(tmp_path)) == ["K.npy", "X.npy"]


# -- (c) completeness before the rename ----------------------------------------------------
def test_unrecorded_block_stops_the_rename(tmp_path, X, monkeypatch):
    """A journal entry that went astray (recorded under a wrong index, as a joined torn
    line would be): the count of entries is right but a block of the plan is missing,
    so the partial file is kept and not renamed; a rerun computes the block."""
    out = str(tmp_path / "K.npy")
    real = J.Journal.mark

    def astray(self, entries):
        real(self, [(N_BLOCKS + 7 if i == 5 else i, s) for i, s in entries])

    monkeypatch.setattr(J.Journal, "mark", astray)
    with pytest.raises(RuntimeError, match=r"1 of the 78 blocks \(blocks 5\) are not "
                                           r"recorded .*not renamed.* Run again"):
        NET.ntk(X, out=out, **KW)
    assert not os.path.exists(out) and os.path.exists(out + ".partial")
    monkeypatch.undo()
    calls = counting(monkeypatch)
    with pytest.warns(UserWarning, match="outside 0..77"):
        K = NET.ntk(X, out=out, **KW)
    assert calls["n"] == 1
    assert np.array_equal(K, NET.ntk(X, **KW))


# -- (d) checksums ---------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["block", "mirror"])
def test_corrupted_block_fails_its_checksum_and_is_recomputed(tmp_path, X, monkeypatch,
                                                              where):
    out = str(tmp_path / "K.npy")
    interrupted(X, out, 4, monkeypatch)                  # blocks 0-3 of band 0
    m = np.load(out + ".partial", mmap_mode="r+")
    if where == "block":
        m[10, 110] += 1.0                                # block 2: rows 0:50, cols 100:150
    else:
        m[110, 10] = -m[110, 10]                         # block 2's mirror
    m.flush()
    del m
    calls = counting(monkeypatch)
    with pytest.warns(UserWarning, match=r"1 of the 4 blocks .*checksum mismatch.*blocks 2\)"):
        K = NET.ntk(X, out=out, **KW)
    assert calls["n"] == N_BLOCKS - 3
    assert np.array_equal(K, NET.ntk(X, **KW))


def test_checksums_are_of_the_block_values(tmp_path, X, monkeypatch):
    out = str(tmp_path / "K.npy")
    interrupted(X, out, 3, monkeypatch)
    _, done = J.read(out + J.SUFFIX)
    K = NET.ntk(X, **KW)
    for b in tiling.plan_gram(600, 600, True, itemsize=8, n_outputs=1, to_file=True,
                              engine_name="reference", tile=50).blocks[:3]:
        assert done[b.index] == (J.checksum(np.ascontiguousarray(K[b.i0:b.i1, b.j0:b.j1]),
                                            b.index),)


def test_old_format_journal_is_refused_clearly(tmp_path, X, monkeypatch):
    out = str(tmp_path / "K.npy")
    interrupted(X, out, 3, monkeypatch)
    header = journal_text(out).split(b"\n")[0].replace(b'"ntkfast_journal": 2',
                                                       b'"ntkfast_journal": 1')
    with open(out + J.SUFFIX, "wb") as f:
        f.write(header + b"\n0\n1\n2\n")
    with pytest.raises(J.JournalMismatch, match=r"format 1.*checksums.*resume=False"):
        NET.ntk(X, out=out, **KW)
    assert np.array_equal(NET.ntk(X, out=out, resume=False, **KW), NET.ntk(X, **KW))


# -- Custom activations across processes ---------------------------------------------------
CUSTOM_SCRIPT = """
import math, sys, numpy as np, ntkfast as nk
from ntkfast.activations import Custom
from ntkfast.backends.reference_engine import ReferenceEngine
c = float(sys.argv[3])
act = Custom(lambda u: math.tanh(c * u) + 0.1 * u, degree=8)
stop, real, calls = int(sys.argv[4]), ReferenceEngine.fill, [0]
def fill(self, *a, **k):
    calls[0] += 1
    if stop and calls[0] > stop:
        raise KeyboardInterrupt
    return real(self, *a, **k)
ReferenceEngine.fill = fill
X = np.load(sys.argv[1])
try:
    nk.MLP(depth=2, activation=act).ntk(X, out=sys.argv[2], backend="reference",
                                        tile=10, n_jobs=1)
except KeyboardInterrupt:
    pass
print(calls[0] - (1 if stop and calls[0] > stop else 0))
"""


def test_custom_activation_resumes_across_processes(tmp_path):
    pytest.importorskip("numba")
    from ntkfast.activations import Custom
    X = np.random.default_rng(1).standard_normal((60, 3))       # 6 bands: 21 blocks
    np.save(tmp_path / "X.npy", X)
    out = str(tmp_path / "K.npy")

    def run(c, stop):
        r = subprocess.run([sys.executable, "-c", CUSTOM_SCRIPT, str(tmp_path / "X.npy"),
                            out, str(c), str(stop)], env=ENV, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return int(r.stdout.split()[-1])

    assert run(1.5, 6) == 6 and not os.path.exists(out)
    other = nk.MLP(depth=2, activation=Custom(lambda u: math.tanh(1.6 * u) + 0.1 * u,
                                              degree=8))
    with pytest.raises(J.JournalMismatch, match="network"):
        other.ntk(X, out=out, backend="reference", tile=10)
    assert run(1.5, 0) == 21 - 6                                  # another process resumes
    same = nk.MLP(depth=2, activation=Custom(lambda u: math.tanh(1.5 * u) + 0.1 * u,
                                             degree=8))
    assert np.array_equal(np.load(out), same.ntk(X, backend="reference", tile=10))


def test_custom_fingerprint_is_by_code_constants_and_name():
    pytest.importorskip("numba")
    from ntkfast.activations import Custom, _callable_fingerprint as fp

    def scaled(k):
        return lambda u: math.tanh(k * u)

    assert fp(scaled(2.0)) == fp(scaled(2.0)) != fp(scaled(3.0))
    assert fp(lambda u: np.tanh(u)) != fp(lambda u: np.sin(u))
    assert fp(np.tanh) != fp(np.sin) and fp(math.tanh) == fp(math.tanh)
    a = Custom(lambda u: math.tanh(u))
    assert a == Custom(lambda u: math.tanh(u)) and a != Custom(lambda u: math.tanh(u) * 2)
    assert Custom(lambda u: u * 1.0, name="lin") == Custom(lambda u: 1.0 * u, name="lin")
    assert Custom(lambda u: u * 1.0, name="lin") != Custom(lambda u: u * 1.0)
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        Custom(lambda u: u * 1.0, name="")


# -- SIGTERM -----------------------------------------------------------------------------------
TERM_SCRIPT = """
import signal, sys, time, numpy as np, ntkfast as nk
signal.signal(signal.SIGTERM, signal.SIG_DFL)  # whatever the parent left us
from ntkfast.backends.reference_engine import ReferenceEngine
real, calls = ReferenceEngine.fill, [0]
def fill(self, *a, **k):
    calls[0] += 1
    if calls[0] == 6:
        print("filled 5", flush=True)
        time.sleep(60)                      # SIGTERM arrives here
    return real(self, *a, **k)
ReferenceEngine.fill = fill
X = np.load(sys.argv[1], mmap_mode="r")
nk.MLP(depth=2, activation="relu", w_std=1.0, b_std=0.1).ntk(
    X, out=sys.argv[2], backend="reference", tile=int(sys.argv[3]), n_jobs=1)
"""


@pytest.mark.parametrize("writer", ["buffered", "direct"])
def test_sigterm_stops_cleanly_and_resumes(tmp_path, monkeypatch, writer):
    """SIGTERM mid-run: the five stored blocks are journaled (with direct writes the
    journal is otherwise written only every DIRECT_SYNC_SECONDS), the process exits
    with status 143, and a resume computes only the others, bit-identically."""
    if writer == "direct" and not direct_supported(str(tmp_path)):
        pytest.skip("no O_DIRECT / Linux AIO on this filesystem")
    X = np.random.default_rng(5).standard_normal((2170, 5))
    np.save(tmp_path / "X.npy", X)
    tile, total = 550, 10                                        # 4 bands, 10 blocks
    out = str(tmp_path / "K.npy")
    env = dict(ENV, NTKFAST_DIRECT_IO="1" if writer == "direct" else "0")
    with subprocess.Popen([sys.executable, "-c", TERM_SCRIPT, str(tmp_path / "X.npy"),
                           out, str(tile)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc:
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            line = proc.stdout.readline() if ready else b""
            if line == b"filled 5\n":
                proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err = proc.stderr.read().decode()
    assert line == b"filled 5\n", err
    assert proc.returncode == tiling.SIGTERM_EXIT == 143, err
    assert "Traceback" not in err
    assert len(J.read(out + J.SUFFIX)[1]) == 5
    assert not os.path.exists(out) and os.path.exists(out + ".partial")
    calls = counting(monkeypatch)
    net = nk.MLP(depth=2, activation="relu", w_std=1.0, b_std=0.1)
    kw = dict(backend="reference", tile=tile, n_jobs=1)
    if writer == "buffered":
        monkeypatch.setenv("NTKFAST_DIRECT_IO", "0")
    net.ntk(X, out=out, **kw)
    assert calls["n"] == total - 5
    fresh = str(tmp_path / "fresh.npy")
    net.ntk(X, out=fresh, **kw)
    with open(out, "rb") as f1, open(fresh, "rb") as f2:
        assert f1.read() == f2.read()


def test_sigterm_handler_is_restored_and_only_in_the_main_thread(tmp_path, X):
    outer = signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as a plain process starts
    try:
        _check_sigterm_handler(tmp_path, X)
    finally:
        signal.signal(signal.SIGTERM, outer)


def _check_sigterm_handler(tmp_path, X):
    seen = []
    real = tiling._FileSink.finish

    def finish(self):
        seen.append(signal.getsignal(signal.SIGTERM))
        return real(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tiling._FileSink, "finish", finish)
        NET.ntk(X, out=str(tmp_path / "K.npy"), **KW)
        assert callable(seen[-1]) and seen[-1] not in (signal.SIG_DFL, signal.SIG_IGN)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        mine = lambda s, f: None                                     # noqa: E731
        old = signal.signal(signal.SIGTERM, mine)
        try:
            NET.ntk(X, out=str(tmp_path / "K2.npy"), **KW)           # a handler of the
            assert seen[-1] is mine                                  # caller's: left alone
        finally:
            signal.signal(signal.SIGTERM, old)
        import threading
        t = threading.Thread(target=NET.ntk, args=(X,),
                             kwargs=dict(out=str(tmp_path / "K3.npy"), **KW))
        t.start()
        t.join()
        assert seen[-1] == signal.SIG_DFL
