"""Build the compiled engine (Cython + OpenMP, BLAS from scipy.linalg.cython_blas).

The C kernel (src_ext/ntk_recursion.h) uses glibc's vector math library
(libmvec) for atan2 when the toolchain provides it: `#pragma omp declare simd`
on atan2 makes gcc emit `_ZGVdN4vv_atan2` (AVX2) or `_ZGVbN2vv_atan2` (SSE2).
We probe for it at build time and fall back to scalar libm otherwise.  The row
kernels are compiled for x86-64-v3 and baseline (gcc target_clones), so the
same build runs on any x86-64 CPU.  No -ffast-math: IEEE semantics are kept.
"""

import os
import platform
import subprocess
import sys
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

MVEC_PROBE = r"""
#include <math.h>
#pragma omp declare simd notinbranch
double atan2(double, double);
void f(int n, const double *restrict a, double *restrict c){
  #pragma omp simd
  for (int i = 0; i < n; i++) c[i] = atan2(a[i], 1.0);
}
int main(void){ double a[64] = {0}, c[64]; f(64, a, c); return (int)c[0]; }
"""


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
    if _compiles(MVEC_PROBE, ["-O3", "-fopenmp-simd", "-fno-math-errno", "-lm"]):
        macros.append(("NTK_HAVE_MVEC", "1"))
    return compile_args, link_args, macros


compile_args, link_args, macros = _flags()
extensions = [
    Extension(
        "ntkfast._engine",
        sources=["src_ext/_engine.pyx"],
        include_dirs=["src_ext", np.get_include()],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        define_macros=macros + [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "boundscheck": False,
                             "wraparound": False, "cdivision": True,
                             "initializedcheck": False},
    ),
)
