"""Adapter giving the NumPy oracle the block-filling interface of the engines."""

from __future__ import annotations

import numpy as np

from . import reference


class ReferenceEngine:
    name = "reference"

    def fill(self, spec, Xb, Zb, out_nngp, out_ntk, *, symmetric, dtype, tile=None,
             n_jobs=1, qx=None, qz=None):
        """Write Σ(Xb, Zb) / Θ(Xb, Zb) into the given 2-D outputs (either may be None)."""
        sigma, theta = reference.gram(spec, Xb, None if symmetric else Zb, dtype.type)
        if out_nngp is not None:
            np.copyto(out_nngp, sigma)
        if out_ntk is not None:
            np.copyto(out_ntk, theta)
