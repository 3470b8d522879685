"""Deprecated call forms of the solvers: they keep working and warn (DeprecationWarning).

Removal is planned for ntkfast 0.3.
"""

from __future__ import annotations

import functools
import warnings

#: a default that tells "not passed" apart from any value (None included)
UNSET = type("Unset", (), {"__repr__": lambda self: "<unset>"})()


def warn_deprecated(message, stacklevel=3):
    """DeprecationWarning pointing at the caller of the public method (stacklevel 3)."""
    warnings.warn(f"{message} (deprecated since ntkfast 0.2, removed in 0.3)",
                  DeprecationWarning, stacklevel=stacklevel)


def renamed_keywords(**old_to_new):
    """Decorator: accept each old keyword name as the new one, with a DeprecationWarning.

    Passing both the old and the new name is a TypeError.
    """
    def decorate(fn):
        name = fn.__qualname__.replace(".__init__", "")

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{name}: got both {old}= (its deprecated name) and "
                                        f"{new}=; pass {new}= only")
                    warn_deprecated(f"{name}: keyword {old}= is renamed {new}=")
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def check_fitted(obj, attr):
    if not hasattr(obj, attr):
        cls = type(obj).__name__
        raise RuntimeError(f"{cls}: not fitted yet; call {cls}(...).fit(...) first, or pass "
                           "the training data to the constructor")


def fit_if_given(obj, train, y_train, train_name):
    """The constructor form: ``Solver(train, y_train, ...)`` fits at once (both given),
    ``Solver(...)`` waits for ``.fit`` (neither); one without the other is an error."""
    if train is None and y_train is None:
        return
    if train is None or y_train is None:
        raise TypeError(f"{type(obj).__name__}: pass both {train_name} and y_train (or "
                        f"neither, then call .fit({train_name}, y_train))")
    obj.fit(train, y_train)
