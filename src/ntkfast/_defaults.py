"""The network defaults of the applications: ``ntkfast gram`` and ``ntkfast sweep``,
:func:`ntkfast.sweep.sweep` and the estimators of :mod:`ntkfast.sklearn`.

Chosen by ``bench/defaults_study.py`` (cross-validated accuracy on the bundled
scikit-learn datasets; results in ``docs/defaults-study.md``).  The library's own
constructors keep the defaults of the API contract and of neural-tangents' ``stax``
(``MLP(w_std=1.0, b_std=None)``, ``Dense(w_std=1.0, b_std=None)``): code ported from
neural-tangents gives the same numbers, and a no-bias ReLU network stays positively
homogeneous.
"""

DEPTH = 1
W_STD = 1.0
B_STD = 1.0
