"""Build the compiled engine (Cython + OpenMP, BLAS from scipy.linalg.cython_blas).

The C row kernels (src_ext/ntk_recursion.h) are plain C99 written for the
vectoriser; on x86-64 the FC tile kernel is compiled for x86-64-v4 (AVX-512),
x86-64-v3 (AVX2, FMA) and the baseline and picked at run time by CPU (the conv
kernel: gcc's target_clones, v3 and baseline), so one build runs on any x86-64
CPU, and other platforms build the portable C alone.  No -ffast-math: IEEE
semantics are kept.
"""

import os
import platform
import subprocess
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

def _compiles(source, args):
    cc = os.environ.get("CC", "cc").split()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as fh:
            fh.write(source)
        cmd = cc + [src, "-o", os.path.join(tmp, "probe")] + args
        try:
            return subprocess.run(cmd, capture_output=True).returncode == 0
        except OSError:
            return False


def _flags():
    if sys.platform == "win32":
        return ["/O2", "/openmp"], [], []
    compile_args = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
    link_args = ["-fopenmp", "-lm"]
    macros = []
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    if x86 and _compiles("__attribute__((target_clones(\"arch=x86-64-v3\",\"default\")))"
                         " int f(int x){return x+1;} int main(void){return f(-1);}", []):
        macros.append(("NTK_TARGET_CLONES", "1"))
    return compile_args, link_args, macros


def _fc_dispatch_macros():
    """NTK_X86_DISPATCH where the compiler builds the x86-64-v4 / -v3 copies of the FC
    tile kernel (ntk_recursion.h: one chosen at run time by CPU, NTKFAST_ISA lowers it)."""
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    probe = ("__attribute__((target(\"arch=x86-64-v4,prefer-vector-width=512\"))) int f4(int x)"
             "{return x+1;} __attribute__((target(\"arch=x86-64-v3\"))) int f3(int x)"
             "{return x+2;} int main(void){__builtin_cpu_init();"
             " return __builtin_cpu_supports(\"avx512f\") ? f4(-1) : f3(-2);}")
    if sys.platform != "win32" and x86 and _compiles(probe, []):
        return [("NTK_X86_DISPATCH", "1")]
    return []


compile_args, link_args, macros = _flags()
extensions = [
    Extension(
        "ntkfast._engine",
        sources=["src_ext/_engine.pyx"],
        include_dirs=["src_ext", np.get_include()],
        depends=["src_ext/ntk_recursion.h", "src_ext/ntk_recursion_impl.h",
                 "src_ext/ntk_transpose.h"],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        define_macros=macros + _fc_dispatch_macros()
        + [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
    # the compiled network engine (conv / pooling / branching networks, per pair of
    # inputs; ntk_conv.h), OpenMP + BLAS like _engine
    Extension(
        "ntkfast._conv_engine",
        sources=["src_ext/_conv_engine.pyx"],
        include_dirs=["src_ext", np.get_include()],
        # no fused multiply-adds: D = q q' - Sigma^2 of pixel pairs computed alike must
        # be 0 exactly (theta = 0), and every CPU clone must give the same bits.
        # -fwrapv (Python's own CFLAGS usually carry it; pinned here): without it gcc 12
        # vectorises the full-mode window sums worse, 1.8x slower cross pass (Myrtle-5
        # float64, measured with two builds differing only in this flag)
        extra_compile_args=compile_args + ([] if sys.platform == "win32"
                                           else ["-ffp-contract=off", "-fwrapv"]),
        depends=["src_ext/ntk_conv.h", "src_ext/ntk_conv_impl.h",
                 "src_ext/ntk_conv_series.h", "src_ext/ntk_recursion.h"],
        extra_link_args=link_args,
        define_macros=macros + [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
    # the out-of-core writer's block I/O (pwrite rows / transposed rows, writeback
    # control) without the GIL; plain C, no OpenMP or BLAS
    Extension(
        "ntkfast._blockio",
        sources=["src_ext/_blockio.pyx"],
        include_dirs=["src_ext"],
        extra_compile_args=[] if sys.platform == "win32" else ["-O3"],
    ),
    # page-aligned O_DIRECT writes with Linux native AIO (the out-of-core fast path;
    # elsewhere it compiles to stubs and the buffered writer is used)
    Extension(
        "ntkfast._directio",
        sources=["src_ext/_directio.pyx"],
        include_dirs=["src_ext"],
        extra_compile_args=[] if sys.platform == "win32" else ["-O3"],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "boundscheck": False,
                             "wraparound": False, "cdivision": True,
                             "initializedcheck": False},
    ),
)
