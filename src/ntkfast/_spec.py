"""The recursion coefficients shared by every backend.

For a fully-connected network ``Dense, [Activation, Dense] * depth`` with
g(x, z) = x·z / d, both parameterizations reduce to one recursion:

    Σ¹ = σ_w² g + σ_b²                Θ¹ = λ₀ g + μ
    Σ' = σ_w² E[φφ] + σ_b²            Θ' = σ_w² E[φ'φ'] Θ + λ E[φφ] + μ

    'ntk'      : λ₀ = λ = σ_w²,           μ = σ_b²
    'standard' : λ₀ = d, λ = width,       μ = 1 if b_std is not None else 0

(neural-tangents' Dense: ``ntk = nngp + W_std² ntk`` in the NTK
parameterization, ``ntk = n_in · nngp_in + W_std² ntk (+1)`` in the standard one.)
"""

from __future__ import annotations

from dataclasses import dataclass

from .activations import Activation


@dataclass(frozen=True)
class RecursionSpec:
    activation: Activation
    depth: int
    w2: float      # σ_w²
    b2: float      # σ_b²
    lam0: float    # Θ¹ = lam0 · g + mu
    lam: float     # Θ' = w2 Ė Θ + lam E + mu
    mu: float

    @classmethod
    def build(cls, activation, depth, w_std, b_std, parameterization, width, d):
        w2 = float(w_std) ** 2
        b2 = 0.0 if b_std is None else float(b_std) ** 2
        if parameterization == "ntk":
            return cls(activation, depth, w2, b2, w2, w2, b2)
        mu = 0.0 if b_std is None else 1.0
        return cls(activation, depth, w2, b2, float(d), float(width), mu)
