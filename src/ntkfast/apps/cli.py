"""The ``ntkfast`` command line: ``gram`` (kernel matrices to .npy files), ``info``, ``demo``."""

from __future__ import annotations

import argparse
import os
import sys
import time

from .. import _defaults

__all__ = ["main", "RECORD_SUFFIX"]


def __dir__():  # the API, not this module's imports
    return list(__all__)


_EPILOG = """\
examples:
  ntkfast gram X.npy -o K.npy --depth 3 --activation relu --b-std 0.1
      Θ(X, X) of a 3-hidden-layer ReLU network, written block by block to K.npy
  ntkfast gram X.npy Z.csv -o K.npy --get nngp --dtype float32
      Σ(X, Z) in float32 (inputs: .npy, memory-mapped, or .csv/.txt tables)
  ntkfast gram X.npy -o S.npy -o T.npy --get both --tile 4096 --jobs 2
      Σ and Θ from one pass into two files (one -o: K_nngp.npy and K_ntk.npy)
  ntkfast gram X.npy -o K.npy --no-resume
      start over instead of resuming an interrupted run of the same command
  ntkfast gram X.npy -o K.npy --depth 5 --overwrite
      replace an existing K.npy (without --overwrite an existing output is kept)
  ntkfast gram X.npy -o K.npy --arch 'conv3x3-relu,avgpool2,gap,dense' --input-shape 8,8,1
      Θ of a convolutional network; each row of X is reshaped to an 8×8×1 image
      (X.npy may also hold the images (N, H, W, C) or signals (N, L, C) already)
  ntkfast gram X.npy -o K.npy --arch myrtle5 --get both
      a preset (Myrtle-5 of Shankar et al. 2020); --arch net.json / net.py read files
  ntkfast info
      version, compiled backend, OpenMP threads and BLAS in use

An interrupted `gram` (Ctrl-C, kill, power loss) resumes where it stopped when the
same command is run again; the output appears under its name only when complete.
An existing output is never replaced without --overwrite (and an input file never);
a finished output records its arguments in OUT.npy.ntkfast.json, so running the same
command again reports that there is nothing to do.  A run stopped by Ctrl-C or SIGTERM
says how many blocks are saved and exits with status 130 / 143.
"""

#: `gram` options that describe an MLP (mutually exclusive with --arch), their defaults
_MLP_DEFAULTS = {"depth": _defaults.DEPTH, "activation": "relu", "w_std": _defaults.W_STD,
                 "b_std": _defaults.B_STD, "parameterization": "ntk", "width": None}

#: the record a finished `gram` leaves next to each output (see _write_record)
RECORD_SUFFIX = ".ntkfast.json"
_RECORD_FORMAT = 1


def _parser():
    from .. import __version__
    p = argparse.ArgumentParser(
        prog="ntkfast", description="Infinite-width NNGP kernels and NTKs of "
        "fully-connected and convolutional networks, on datasets larger than memory.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"ntkfast {__version__}")
    sub = p.add_subparsers(dest="command", metavar="{gram,info,demo,sweep,serve}")
    sub.required = True

    from ..architecture_spec import GRAMMAR_HELP
    g = sub.add_parser("gram", help="compute Σ and/or Θ into .npy files",
                       description="Compute the NNGP kernel Σ and/or the NTK Θ of X "
                       "against X (or Z) and write them to .npy files, resumably.",
                       epilog=_EPILOG + "\n" + GRAMMAR_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("X", help="input rows: .npy (memory-mapped) or .csv/.txt")
    g.add_argument("Z", nargs="?", help="second input (default: X against itself)")
    g.add_argument("-o", "--out", action="append", required=True, metavar="OUT.npy",
                   help="output file; with --get both give two (nngp, ntk) or one "
                   "(OUT_nngp.npy and OUT_ntk.npy are written)")
    g.add_argument("--get", choices=("ntk", "nngp", "both"), default="ntk",
                   help="which kernel(s) to compute (default: ntk)")
    # the MLP's options default to "not given" (argparse.SUPPRESS) so that combining
    # them with --arch is detected; _mlp_arguments fills in _MLP_DEFAULTS
    unset = argparse.SUPPRESS
    g.add_argument("--depth", type=int, default=unset,
                   help=f"hidden layers (default: {_defaults.DEPTH})")
    g.add_argument("--activation", default=unset, metavar="ACT",
                   help=_activation_help())
    g.add_argument("--w-std", type=float, default=unset,
                   help=f"σ_w (default: {_defaults.W_STD:g})")
    g.add_argument("--b-std", type=_optional_float, default=unset,
                   help=f"σ_b, or 'none' for no bias (default: {_defaults.B_STD:g}; see "
                   "docs/defaults-study.md)")
    g.add_argument("--parameterization", choices=("ntk", "standard"), default=unset,
                   help="default: ntk")
    g.add_argument("--width", type=int, default=unset,
                   help="hidden width, needed by --parameterization standard")
    g.add_argument("--arch", metavar="SPEC", default=None,
                   help="any architecture instead of the MLP options above: a spec "
                   "string (grammar below), a preset, a .json file (the network's "
                   "describe()) or a .py file defining `network`")
    g.add_argument("--input-shape", metavar="H,W,C", default=None,
                   help="with --arch: reshape each row of a 2-D X (and Z) to this "
                   "per-example shape, channels last (e.g. 8,8,1 or L,C)")
    g.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="output dtype (default: follows X; text input gives float64)")
    g.add_argument("--tile", type=int, default=None,
                   help="block edge in rows (default: from the memory budget)")
    g.add_argument("--jobs", type=int, default=None, help="threads (default: all cores)")
    from ..backends import BACKENDS
    g.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto (default: compiled closed forms, Numba quadrature for other "
                   "activations), compiled, reference (plain NumPy), numba, cuda (an "
                   "NVIDIA GPU through numba.cuda)")
    g.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start over, deleting a partial output of an earlier run")
    g.add_argument("--overwrite", action="store_true",
                   help="replace existing output files (never the input files); without "
                   "it an existing output is an error, or, if it holds this very kernel, "
                   "nothing is done")
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="show a progress bar (default: on; when stderr is not a terminal, "
                   f"one line every {_LineProgress.INTERVAL:g} s once a run takes that long)")
    g.add_argument("--no-progress", dest="progress", action="store_false")
    g.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")

    sub.add_parser("info", help="version, compiled backend, threads, BLAS",
                   description="Show the version, whether the compiled backend is built, "
                   "OpenMP threads and the BLAS library in use.")
    sub.add_parser("demo", help="a short guided demonstration (see `ntkfast demo --help`)",
                   add_help=False)
    sub.add_parser("serve", help="interactive NTK page on http://127.0.0.1:8765/ "
                   "(see `ntkfast serve --help`)", add_help=False)
    from .. import sweep
    s = sub.add_parser("sweep", help="cross-validated depth/ridge sweep over datasets",
                       description="Score NTK/NNGP kernel regression for every depth, "
                       "frozen-layer count and ridge from one kernel pass and one eigh "
                       "per kernel per fold.")
    sweep.add_sweep_arguments(s)
    return p


#: what `ntkfast serve` imports beyond the core (the 'serve' extra: Flask and its werkzeug)
_SERVE_MODULES = ("flask", "werkzeug")


def _serve(argv):
    import importlib.util

    from .web import app as web  # Flask is imported only when the server starts
    p = argparse.ArgumentParser(prog="ntkfast serve",
                                description="Interactive NTK page, on loopback by default.")
    web.add_serve_arguments(p)
    args = p.parse_args(argv)
    missing = [m for m in _SERVE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"ntkfast serve needs Flask ({', '.join(missing)} not installed): "
                          'pip install "ntkfast[serve]"')
    return int(web.main_from_args(args) or 0)


def _check_width(args):
    """--parameterization standard needs --width: say so in the CLI's terms (the library's
    own error shows the Python call)."""
    if getattr(args, "parameterization", None) == "standard" and \
            getattr(args, "width", None) is None:
        raise ValueError("--width: --parameterization standard needs the hidden width, "
                         "e.g. --parameterization standard --width 512")


def _sweep(args):
    from ..sweep import main_from_args
    _check_width(args)
    return main_from_args(args)


def _optional_float(text):
    if text.lower() in ("none", "no", ""):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}")


def _output_paths(outs, get):
    if get == "both":
        if len(outs) == 1:
            root, ext = os.path.splitext(outs[0])
            ext = ext or ".npy"
            return [f"{root}_nngp{ext}", f"{root}_ntk{ext}"]
        if len(outs) == 2:
            return outs
        raise ValueError(f"-o/--out: --get both takes one or two outputs, got {len(outs)}")
    if len(outs) != 1:
        raise ValueError(f"-o/--out: --get {get} writes one file, got {len(outs)} "
                         "(use --get both for two)")
    return outs


def _same_file(a, b) -> bool:
    """Do the paths name the same file (links and relative spellings included)?"""
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _file_fingerprint(path):
    """Cheap identity of a finished output file: size, mtime, inode and a hash of its
    first and last MiB (a full hash would read the whole, possibly huge, file)."""
    import hashlib

    st = os.stat(path)
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if st.st_size > 2 << 20:
            f.seek(st.st_size - (1 << 20))
            h.update(f.read(1 << 20))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino,
            "head_tail_blake2b": h.hexdigest()}


def _run_records(args, X, Z, kinds):
    """What determines the kernel in each output (``kinds``: 'nngp'/'ntk') of this
    command: the network, dtype, backend and the inputs' shapes, dtypes and content
    hashes (inputs hashed once)."""
    from ..outofcore.journal import content_hash

    def fingerprint(A):
        return None if A is None else {"shape": list(A.shape), "dtype": A.dtype.str,
                                        "blake2b": content_hash(A)}

    if args.arch is not None:
        import json
        # as it reads back from the record file (tuples become lists)
        network = {"architecture": json.loads(json.dumps(args.network.describe())),
                   "input_shape": None if args.input_shape is None else
                   list(_parse_shape(args.input_shape))}
    else:
        network = {"depth": args.depth, "activation": args.activation,
                   "w_std": args.w_std, "b_std": args.b_std,
                   "parameterization": args.parameterization, "width": args.width}
    common = {"format": _RECORD_FORMAT, "network": network,
              "dtype": args.dtype, "backend": args.backend,
              "X": fingerprint(X), "Z": fingerprint(Z)}
    return [dict(common, kernel=k) for k in kinds]


def _read_record(path):
    import json
    try:
        with open(path + RECORD_SUFFIX) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _holds(path, record) -> bool:
    """Does the existing output ``path`` hold the kernel ``record`` describes (its
    record file matches and the file is the one the record was written for)?"""
    saved = _read_record(path)
    if not isinstance(saved, dict) or saved.get("run") != record:
        return False
    try:
        return saved.get("file") == _file_fingerprint(path)
    except OSError:
        return False


def _write_record(path, record):
    """Write ``path`` + RECORD_SUFFIX atomically: the run's arguments and the output's
    fingerprint (written after the output is complete)."""
    import json
    tmp = path + RECORD_SUFFIX + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"run": record, "file": _file_fingerprint(path)}, f, indent=1,
                  sort_keys=True)
        f.write("\n")
    os.replace(tmp, path + RECORD_SUFFIX)


def _remove_record(path):
    try:
        os.unlink(path + RECORD_SUFFIX)
    except FileNotFoundError:
        pass


def _check_outputs(args, paths, X, Z, kinds):
    """Decide what to do with existing outputs: (nothing_to_do, the run records if they
    were computed, else None).

    * an output that is an input file (X or Z): always an error, even with --overwrite;
    * a journal next to the (first) output: an interrupted run of this output (fresh, or
      one started with --overwrite): resume it; the tiling layer checks its arguments;
    * existing outputs without --overwrite: nothing to do if every output holds this
      very kernel (its record matches), else an error;
    * --overwrite: the old records are removed, the outputs recomputed.
    """
    import errno

    from ..outofcore.journal import journal_path

    for p in paths:
        for name, inp in (("X", args.X), ("Z", args.Z)):
            if inp is not None and _same_file(p, inp):
                raise ValueError(f"-o/--out: {p!r} is the input file {name} ({inp!r}); "
                                 "the kernel would overwrite its own input; choose another "
                                 "output name (--overwrite never applies to input files)")
    if len(paths) == 2 and _same_file(paths[0], paths[1]):
        raise ValueError(f"-o/--out: both kernels would go to the same file {paths[0]!r}; "
                         "pass two different paths")
    existing = [p for p in paths if os.path.exists(p)]
    if not existing or os.path.exists(journal_path(os.path.abspath(paths[0]))):
        return False, None
    if args.overwrite:
        for p in paths:
            _remove_record(p)
        return False, None
    records = _run_records(args, X, Z, kinds)
    if len(existing) == len(paths) and all(_holds(p, r) for p, r in zip(paths, records)):
        return True, records
    raise FileExistsError(errno.EEXIST, f"-o/--out: {', '.join(existing)}: the output "
                          "already exists (and was not written by `ntkfast gram` with "
                          "these arguments); pass --overwrite to replace it, or choose "
                          "another output name")


def _mlp_arguments(args):
    """Fill in the MLP options' defaults; with --arch none of them may be given."""
    given = [k for k in _MLP_DEFAULTS if hasattr(args, k)]
    if args.arch is not None and given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise ValueError(f"--arch: {flags} describe(s) an MLP and cannot be combined with "
                         "--arch; put the layers' settings into the spec instead (e.g. "
                         "'dense-w1.5-b0.1,relu,dense-w1.5-b0.1')")
    if args.arch is None and args.input_shape is not None:
        raise ValueError("--input-shape: only with --arch (the MLP takes rows of X as "
                         "vectors)")
    for k, v in _MLP_DEFAULTS.items():
        if not hasattr(args, k):
            setattr(args, k, v)
    if args.arch is None:
        _check_width(args)


def _parse_shape(text):
    try:
        shape = tuple(int(v) for v in str(text).strip().replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise ValueError(f"--input-shape: expected positive integers such as 8,8,1 (H,W,C) "
                         f"or 64,3 (L,C), got {text!r}")
    return shape


def _reshaped(A, shape, name):
    """A (N, ...) as (N, *shape) (--input-shape); a view where possible."""
    if shape is None or A is None:
        return A
    if A.shape[1:] == shape:
        return A
    import math
    size, per_row = math.prod(shape), math.prod(A.shape[1:])
    if per_row != size:
        raise ValueError(f"--input-shape: {name} has {per_row} values per example (shape "
                         f"{A.shape}), which cannot be reshaped to "
                         f"{'×'.join(map(str, shape))} = {size}")
    return A.reshape((A.shape[0],) + shape)


def _network(args, X):
    """The network of this command: an MLP, or the --arch spec read for X's shape."""
    from ..network import MLP
    if args.arch is None:
        return MLP(depth=args.depth, activation=_activation(args.activation),
                   w_std=args.w_std,
                   b_std=args.b_std, parameterization=args.parameterization,
                   width=args.width)
    from ..architecture_spec import parse_architecture
    from ..backends.reference_network import NetworkPlan
    from ..layers import LayerError
    example = X.shape[1:]
    net = parse_architecture(args.arch, spatial_dims=len(example) - 1 if len(example) > 1
                             else None)
    try:
        NetworkPlan(net, example)  # shape errors now, naming the layer
    except LayerError as exc:
        hint = ("; X holds vectors: give --input-shape H,W,C (or L,C) to read each row as "
                "an image (or signal)" if len(example) == 1 else "")
        raise LayerError(f"--arch: {exc}{hint}") from None
    return net


# -- --activation ------------------------------------------------------------------------
def _activation(text):
    """The activation of ``--activation``: the --arch grammar's activation token
    (``relu``, ``leaky_relu(0.1)``, ``abrelu(a,b)``, ``erf(a,b,c)``, ``tanh``, ``sin(a,b,c)`` …);
    a ValueError naming the valid forms otherwise."""
    from ..architecture_spec import (_ALIASES, ACTIVATIONS, ArchitectureSpecError,
                                     _activation_from_key)
    text = str(text).strip()
    name = text.split("(")[0].strip().lower().replace("-", "_")
    if _ALIASES.get(name, name) not in ACTIVATIONS:
        raise ValueError(f"activation: unknown activation {text!r}; use one of "
                         f"{_activation_names()}")
    try:
        return _activation_from_key(text, "--activation")
    except (ArchitectureSpecError, ValueError) as exc:
        first = str(exc).splitlines()[0]
        raise ValueError(f"activation: {first}; the forms are {_activation_names()}") \
            from None


def _activation_names():
    from ..architecture_spec import ACTIVATIONS
    forms = {"leaky_relu": "leaky_relu(0.1)", "abrelu": "abrelu(a,b)", "erf": "erf(a,b,c)",
             "sin": "sin(a,b,c)", "cos": "cos(a,b,c)"}
    return ", ".join(forms.get(n, n) for n in ACTIVATIONS)


def _activation_help():
    return (f"{_activation_names()} (parameters as in --arch; default: relu).  tanh, "
            "softplus, sigmoid, silu have no closed form: Hermite series, ~2-5x the "
            "ReLU time")


# -- progress lines for logs ---------------------------------------------------------------
class _LineProgress:
    """Stands in for ``sys.stderr`` while a ``gram`` runs with stderr not a terminal: the
    progress bar's carriage-return refreshes (tqdm writes '\r' + status) become one
    line every :data:`INTERVAL` seconds, the first only once the run has taken that long,
    and a last one at the end if any was shown; other text passes through."""

    INTERVAL = 5.0

    def __init__(self, stream, interval=None):
        self._stream = stream
        self._interval = self.INTERVAL if interval is None else interval
        self._t0 = self._last = time.monotonic()
        self._status = None
        self._shown = None      # the last line written

    @classmethod
    def installed(cls, enabled):
        import contextlib

        @contextlib.contextmanager
        def ctx():
            if not enabled:
                yield None
                return
            real = sys.stderr
            sys.stderr = lines = cls(real)
            try:
                yield lines
            finally:
                sys.stderr = real
                lines.finish()
        return ctx()

    def write(self, text):
        if not text:
            return 0
        if "\r" not in text:
            if text.strip() or self._status is None:
                self._stream.write(text)
            return len(text)
        status = [p for p in text.split("\r") if p.strip()]
        if status:
            self._status = status[-1].rstrip("\n")
        now = time.monotonic()
        if self._status and now - self._last >= self._interval:
            self._emit()
            self._last = now
        return len(text)

    def _emit(self):
        line = self._status.strip()
        if line != self._shown:
            self._stream.write(line + "\n")
            self._stream.flush()
        self._shown = line

    def finish(self):
        if self._shown and self._status:
            self._emit()

    def flush(self):
        self._stream.flush()

    def isatty(self):
        return False

    def fileno(self):
        return self._stream.fileno()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _stopped(paths, status):
    """Say how much of an interrupted run is saved; the exit status (130 or 143)."""
    from ..outofcore import journal as J
    counts = ""
    try:
        header, done = J.read(J.journal_path(os.path.abspath(paths[0])))
        counts = f" {len(done)} of {int(header['n_blocks'])} blocks are saved;"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    print(f"ntkfast: stopped;{counts} run the same command again to resume",
          file=sys.stderr)
    return status


def _gram(args):
    import numpy as np

    from ..outofcore.io import load_matrix

    _mlp_arguments(args)
    paths = _output_paths(args.out, args.get)
    for p in paths:
        if not p.lower().endswith(".npy"):
            raise ValueError(f"-o/--out: {p!r} must end in .npy")
    shape = None if args.input_shape is None else _parse_shape(args.input_shape)
    X = _reshaped(load_matrix(args.X, "X"), shape, "X")
    Z = None if args.Z is None else _reshaped(load_matrix(args.Z, "Z"), shape, "Z")
    net = args.network = _network(args, X)
    kinds = ["nngp", "ntk"] if args.get == "both" else [args.get]
    done, records = _check_outputs(args, paths, X, Z, kinds)
    if done:
        if not args.quiet:
            for p in paths:
                print(f"{p} already holds this kernel (same arguments); nothing to do; use "
                      "--overwrite to recompute")
        return 0
    # a terminal gets tqdm's bar; a log file or pipe the same bar as one line every few
    # seconds (only once the run takes that long), unless --progress/--no-progress
    progress = True if args.progress is None else args.progress
    lines = args.progress is None and not args.quiet and not sys.stderr.isatty()
    kw = dict(dtype=args.dtype, tile=args.tile, n_jobs=args.jobs, backend=args.backend,
              progress=progress and not (args.quiet and args.progress is None),
              resume=args.resume)
    t0 = time.perf_counter()
    try:
        with _LineProgress.installed(lines):
            arrays = _compute(net, args, X, Z, paths, kw)
    except KeyboardInterrupt:
        return _stopped(paths, 130)
    except SystemExit as exc:  # SIGTERM: the library stored and journaled the blocks
        from ..outofcore.tiling import SIGTERM_EXIT
        if exc.code != SIGTERM_EXIT:
            raise
        return _stopped(paths, SIGTERM_EXIT)
    return _finish(args, paths, arrays, records, X, Z, kinds, t0)


def _compute(net, args, X, Z, paths, kw):
    """The requested kernels, written to ``paths``."""
    if args.get == "both":
        result = net.kernels(X, Z, out=tuple(paths), **kw)
        return [result.nngp, result.ntk]
    if args.get == "nngp":
        return [net.nngp(X, Z, out=paths[0], **kw)]
    return [net.ntk(X, Z, out=paths[0], **kw)]


def _finish(args, paths, arrays, records, X, Z, kinds, t0):
    import numpy as np
    elapsed = time.perf_counter() - t0
    for p, r in zip(paths, records or _run_records(args, X, Z, kinds)):
        _write_record(p, r)
    if not args.quiet:
        for p, a in zip(paths, arrays):
            size = a.size * a.itemsize
            print(f"wrote {p}: {a.shape[0]}×{a.shape[1]} {np.dtype(a.dtype).name} "
                  f"({size / 1e6:.1f} MB) in {elapsed:.1f} s")
    return 0


def _info(args):
    import platform

    import numpy as np

    from .. import __version__
    from ..backends import compiled_available
    from .. import backends as B
    from ..outofcore.tile_plan import cache_sizes, default_budget

    import scipy.linalg  # noqa: F401 - load the BLAS so threadpoolctl sees it
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"ntkfast {__version__}")
    print(f"python {platform.python_version()}, numpy {np.__version__}")
    if compiled_available():
        print("compiled backend: available")
    else:
        print(f"compiled backend: not built ({getattr(B, '_COMPILED_ERROR', None)}); "
              "the NumPy reference backend is used")
    print(f"cores available: {ncpu}")
    caches = ", ".join(f"{k} {v // 1024} KiB" for k, v in sorted(cache_sizes().items()))
    print(f"caches (per core / shared): {caches or 'unknown'}")
    print(f"block scratch budget: {default_budget() // 2**20} MiB in RAM, "
          f"{default_budget(to_file=True) // 2**20} MiB for .npy file outputs")
    try:
        from threadpoolctl import threadpool_info
        pools = threadpool_info()
    except ImportError:
        pools = None
    omp = os.environ.get("OMP_NUM_THREADS")
    if pools is None:
        print("threadpoolctl not installed: BLAS/OpenMP details unavailable")
        return 0
    omp_pools = [p for p in pools if p.get("user_api") == "openmp"]
    if omp_pools:
        for p in omp_pools:
            print(f"OpenMP: {p.get('internal_api')} {p.get('num_threads')} threads "
                  f"({p.get('filepath')})")
    else:
        print(f"OpenMP: no runtime loaded (OMP_NUM_THREADS={omp or 'unset'}, "
              f"{ncpu} cores)")
    blas = [p for p in pools if p.get("user_api") == "blas"]
    for p in blas:
        print(f"BLAS: {p.get('internal_api')} {p.get('version') or ''} "
              f"{p.get('num_threads')} threads, {p.get('threading_layer', '')} "
              f"{p.get('architecture', '')} ({p.get('filepath')})".replace("  ", " "))
    if not blas:
        print("BLAS: none found")
    return 0


def _demo(argv):
    import importlib
    try:
        demo = importlib.import_module("ntkfast.apps.demo")
    except ModuleNotFoundError as exc:
        if exc.name not in ("ntkfast.apps.demo",):
            raise
        print("ntkfast: error: the demo is not available in this version "
              "(module ntkfast.apps.demo is missing)", file=sys.stderr)
        return 2
    p = argparse.ArgumentParser(prog="ntkfast demo",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_demo_arguments(p)
    args = p.parse_args(argv)
    rc = demo.main_from_args(args)
    return 0 if rc is None else int(rc)


def main(argv=None):
    """Entry point of the ``ntkfast`` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["demo"]:
            return _demo(argv[1:])
        if argv[:1] == ["serve"]:
            return _serve(argv[1:])
        args = _parser().parse_args(argv)
        handlers = {"gram": _gram, "info": _info, "sweep": _sweep}
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("ntkfast: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ImportError) as exc:
        msg = exc.strerror if isinstance(exc, OSError) and exc.strerror and \
            exc.filename is None else str(exc)
        print(f"ntkfast: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
