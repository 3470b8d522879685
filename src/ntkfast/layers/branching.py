"""Branching layers: FanOut, parallel branches, FanInSum (residual blocks).

FanOut(n) copies the kernel state into n branches; ``parallel(f_1, ..., f_n)`` runs
branch i on copy i; FanInSum adds the branches' outputs.  The branches have
independent weights, so the sum of their outputs has the sum of their covariances:
Σ' = Σ_i Σ_i,  Θ' = Σ_i Θ_i,  q' = Σ_i q_i.

As in neural-tangents 0.6.5, FanInSum of two or more branches needs every branch to be
a zero-mean Gaussian (``is_gaussian``: each ends with a Dense/Conv, possibly pooled, or
is an identity of such), and branches of one shape.
"""

from __future__ import annotations

import dataclasses

from .base import Layer, LayerError
from .state import Meta

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

    def output_meta(self, meta, where):
        self.output_spatial(meta if not isinstance(meta, list) else
                            [m.spatial for m in meta], where)
        return [meta] * self.num

    def kernel(self, state):
        return [state] * self.num

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

    def output_meta(self, meta, where):
        spatial = self.output_spatial(
            [m.spatial for m in meta] if isinstance(meta, list) else meta.spatial, where)
        channels = {m.channels for m in meta}
        if len(channels) > 1 and None not in channels:
            raise LayerError(f"{where}: FanInSum adds branches of one shape, got channel "
                             f"counts {[m.channels for m in meta]}; give the branches' last "
                             "Dense/Conv the same width")
        if len(meta) > 1 and not all(m.gaussian for m in meta):
            bad = [i for i, m in enumerate(meta) if not m.gaussian]
            raise LayerError(
                f"{where}: FanInSum of {len(meta)} branches is defined (as in "
                "neural-tangents) only for zero-mean Gaussian branches, but branch(es) "
                f"{bad} end with an activation, Flatten or the raw input; end every "
                "branch with a Dense/Conv (an identity branch is fine after a Dense/Conv)")
        known = channels - {None}
        return Meta(spatial, known.pop() if len(channels) == 1 and known else None,
                    all(m.gaussian for m in meta))

    def kernel(self, states):
        meta = self.output_meta([s.meta for s in states], "FanInSum")

        def total(arrays):
            if any(a is None for a in arrays):
                return None
            out = arrays[0]
            for a in arrays[1:]:
                out = out + a
            return out

        first = states[0]
        return dataclasses.replace(first, meta=meta,
                                   nngp=total([s.nngp for s in states]),
                                   cov=total([s.cov for s in states]),
                                   ntk=total([s.ntk for s in states]))


class Parallel(Layer):
    """Branch i applied to input i (``nk.parallel(*branches)``)."""

    kind = "branching"

    def __init__(self, *branches):
        from .combinators import as_layer
        if not branches:
            raise ValueError("parallel: give at least one branch")
        self.branches = tuple(as_layer(b, f"parallel branch {i}") for i, b in
                              enumerate(branches))

    def _check_inputs(self, inputs, where):
        if not isinstance(inputs, list) or len(inputs) != len(self.branches):
            got = f"{len(inputs)} branches" if isinstance(inputs, list) else "one input"
            raise LayerError(f"{where}: parallel has {len(self.branches)} branches but gets "
                             f"{got}; put FanOut({len(self.branches)}) before it")

    def output_spatial(self, spatial, where):
        self._check_inputs(spatial, where)
        return [b.output_spatial(s, _branch_name(where, i, b))
                for i, (b, s) in enumerate(zip(self.branches, spatial))]

    @property
    def mixes_positions(self):
        return any(b.mixes_positions for b in self.branches)

    def output_meta(self, meta, where):
        self._check_inputs(meta, where)
        return [b.output_meta(m, _branch_name(where, i, b))
                for i, (b, m) in enumerate(zip(self.branches, meta))]

    def kernel(self, states):
        return [b.kernel(s) for b, s in zip(self.branches, states)]

    def describe(self):
        return {"layer": "Parallel", "branches": [b.describe() for b in self.branches]}

    def __repr__(self):
        return "parallel(" + ", ".join(map(repr, self.branches)) + ")"


def _branch_name(where, i, layer):
    from .combinators import Serial
    name = f"{where} branch {i}"
    return name if isinstance(layer, Serial) else f"{name} ({type(layer).__name__})"
