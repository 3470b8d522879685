"""
Out of core, interrupted and resumed
====================================

With ``out="K.npy"`` the kernel is written block by block to a ``.npy`` file and only a
few blocks are held in memory. A run that is stopped (Ctrl-C, SIGTERM, a crash) resumes
when started again with the same arguments. Here at a small size: 6000 points, blocks
of 1024 rows, computed by ``ntkfast gram`` in a subprocess that we stop with SIGTERM
once part of the file is written, then run again. The points lie around 6 centres, so the
kernel has a block structure.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np

import ntkfast as nk

work = tempfile.mkdtemp()
rng = np.random.default_rng(0)
centres = rng.standard_normal((6, 200))
X = (centres[np.sort(rng.integers(0, 6, 6000))]
     + 0.8 * rng.standard_normal((6000, 200))).astype(np.float32)
np.save(os.path.join(work, "X.npy"), X)
out = os.path.join(work, "K.npy")
cmd = [sys.executable, "-m", "ntkfast.apps.cli", "gram", "X.npy", "-o", "K.npy",
       "--depth", "10", "--w-std", "1.4", "--b-std", "0.1", "--tile", "1024", "--jobs", "1"]

# %%
# Start the run and stop it once its partial file exists.
proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True)
t0 = time.perf_counter()
while proc.poll() is None and not os.path.exists(out + ".partial"):
    time.sleep(0.02)
time.sleep(0.3)
proc.send_signal(signal.SIGTERM)
text, _ = proc.communicate()
print(f"exit status {proc.returncode} after {time.perf_counter() - t0:.1f} s")
print(text.strip().splitlines()[-1] if text.strip() else "")
print("files:", sorted(os.listdir(work)))

# %%
# The same command again resumes: the blocks recorded in the journal are skipped.
t0 = time.perf_counter()
done = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
print(f"exit status {done.returncode} after {time.perf_counter() - t0:.1f} s")
print("files:", sorted(os.listdir(work)))

# %%
# The file is a plain ``.npy``: open it as a memory map. It equals the kernel computed
# in memory in one go.
K = np.load(out, mmap_mode="r")
net = nk.MLP(depth=10, activation="relu", w_std=1.4, b_std=0.1)
ref = net.ntk(X[:500], X)
print("max |K - in-memory| / max |K|:",
      float(np.abs(K[:500] - ref).max() / np.abs(ref).max()))

fig, ax = plt.subplots(figsize=(5, 4.2))
rows = np.arange(0, 6000, 20)                 # every 20th point, in centre order
im = ax.imshow(K[np.ix_(rows, rows)], cmap="magma")
fig.colorbar(im, ax=ax, label=r"$\Theta(x, x')$")
ax.set_title("every 20th row and column of the resumed K.npy", fontsize=10)
plt.show()
