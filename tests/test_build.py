"""The installed package carries the compiled engine (the build compiles it; no fallback)."""

import ntkfast
from ntkfast.backends import compiled_available, get_backend


def test_compiled_engine_is_built_and_default():
    assert compiled_available(), "ntkfast._engine is missing: the build did not compile it"
    assert get_backend("auto", ntkfast.ReLU()).name == "compiled"


def test_auto_falls_back_or_uses_compiled():
    assert get_backend("auto", ntkfast.GELU()).name in ("compiled", "reference")
    assert get_backend("reference", ntkfast.GELU()).name == "reference"
