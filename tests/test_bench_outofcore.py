"""Smoke test of ``bench/bench_outofcore.py`` at toy sizes (the benchmark's numbers
are not asserted: performance is measured in bench/, not tested)."""

import os
import re
import subprocess
import sys

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                     "bench_outofcore.py")


def test_bench_outofcore_rows_and_cleanup(tmp_path):
    res = subprocess.run([sys.executable, BENCH, "--n", "1200", "--d", "16", "--ram-n", "400",
                          "--repeat", "2", "--tile", "512", "--probe-seconds", "0.3",
                          "--dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    rows = [line.split("|")[1].strip() for line in res.stdout.splitlines()
            if line.startswith("| ") and "wall (s)" not in line]
    assert rows == ["in-RAM", "in-RAM, disk busy", "out-of-core (.npy memmap)"]
    assert re.search(r"in-RAM reference: median of 2 runs \(best: [\d.]+ M elements/s",
                     res.stdout)
    m = re.search(r"writer to (?:fresh|its own, rewritten,) blocks \((O_DIRECT|buffered)\) "
                  r"ran at \d+ MB/s alone \(so [\d.]+ GB take "
                  r"\d+ s\), then beside the engine at (\d+) MB/s \(paced to (\d+): the output "
                  r"rate of an out-of-core run at 80% of in-RAM\); the engine ran at \d+% of its "
                  r"idle-disk speed", res.stdout)
    assert m, res.stdout
    got, paced = int(m.group(2)), int(m.group(3))
    assert 0 < got <= 1.1 * paced + 10  # the pace holds (one 4 MiB chunk of slack)
    assert os.listdir(tmp_path) == []  # X.npy, K.npy and the probe's scratch file are gone


def test_probe_frees_its_blocks_before_each_pass(tmp_path):
    """The disk-busy probe must write fresh blocks, as an output run does: its hole
    puncher frees a file's blocks and keeps its size (a no-op where unsupported)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_outofcore", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    path = tmp_path / "probe.bin"
    path.write_bytes(os.urandom(8 * 2**20))
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
        before = os.fstat(fd).st_blocks
        punched = bench._hole_puncher()(fd, 8 * 2**20)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    assert after.st_size == 8 * 2**20
    if sys.platform.startswith("linux"):
        assert punched and before > 0 and after.st_blocks < before // 8
