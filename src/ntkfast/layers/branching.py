"""Branching layers: FanOut, parallel branches, FanInSum (residual blocks).

FanOut(n) copies the kernel state into n branches; ``parallel(f_1, ..., f_n)`` runs
branch i on copy i; FanInSum adds the branches' outputs.  The branches have
independent weights, so the sum of their outputs has the sum of their covariances:
Σ' = Σ_i Σ_i,  Θ' = Σ_i Θ_i,  q' = Σ_i q_i.
"""

from __future__ import annotations

from .base import Layer, LayerError

__all__ = ["FanOut", "FanInSum", "Parallel"]


class FanOut(Layer):
    """n copies of its input (then ``parallel`` or ``FanInSum``)."""

    kind = "branching"

    def __init__(self, num):
        from .._validation import check_int
        self.num = check_int(num, "FanOut: num", minimum=1)

    def output_spatial(self, spatial, where):
        if isinstance(spatial, list):
            raise LayerError(f"{where}: FanOut needs one input, got {len(spatial)} branches; "
                             "join them with FanInSum first")
        return [spatial] * self.num

    def _params(self):
        return {"num": self.num}


class FanInSum(Layer):
    """The sum of the branches' outputs (all of one shape)."""

    kind = "branching"

    def output_spatial(self, spatial, where):
        if not isinstance(spatial, list):
            raise LayerError(f"{where}: FanInSum needs branches (FanOut then parallel) but "
                             "gets one input")
        if len(set(spatial)) != 1:
            raise LayerError(f"{where}: FanInSum adds branches of one shape, got spatial "
                             f"shapes {spatial}; make the branches agree (e.g. the same "
                             "strides and padding='SAME')")
        return spatial[0]


class Parallel(Layer):
    """Branch i applied to input i (``nk.parallel(*branches)``)."""

    kind = "branching"

    def __init__(self, *branches):
        from .combinators import as_layer
        if not branches:
            raise ValueError("parallel: give at least one branch")
        self.branches = tuple(as_layer(b, f"parallel branch {i}") for i, b in
                              enumerate(branches))

    def output_spatial(self, spatial, where):
        if not isinstance(spatial, list) or len(spatial) != len(self.branches):
            got = f"{len(spatial)} branches" if isinstance(spatial, list) else "one input"
            raise LayerError(f"{where}: parallel has {len(self.branches)} branches but gets "
                             f"{got}; put FanOut({len(self.branches)}) before it")
        return [b.output_spatial(s, f"{where} branch {i}")
                for i, (b, s) in enumerate(zip(self.branches, spatial))]

    def describe(self):
        return {"layer": "Parallel", "branches": [b.describe() for b in self.branches]}

    def __repr__(self):
        return "parallel(" + ", ".join(map(repr, self.branches)) + ")"
