"""Architectures as text: a short spec string, a JSON file, or a Python file.

``parse_architecture(text_or_path)`` returns an ``nk.serial`` network;
``format_architecture(network)`` writes one as a spec string, so that
``parse_architecture(format_architecture(net)) == net`` (layers compare by
``describe()``).  Three forms are accepted:

1. **A spec string** (the grammar below), e.g.
   ``"conv3x3-relu,conv3x3-relu,avgpool2,conv3x3-relu,gap,dense"``.
2. **A JSON file** (``*.json``, or the JSON text itself) holding the ``describe()``
   form of a network: ``{"layer": "Serial", "layers": [{"layer": "Conv",
   "filter_shape": [3, 3], ...}, ...]}`` or just the list of layer dicts, nesting for
   Serial (``"layers"``) and Parallel (``"branches"``).  ``json.dump(net.describe(),
   f)`` round-trips.  An Elementwise layer's ``"activation"`` may also be a spec
   string such as ``"relu"`` or ``"leaky_relu(0.1)"``.
3. **A Python file** (``*.py``) that defines ``network = nk.serial(...)`` (``nk`` and
   ``ntkfast`` are predefined).  The file is *executed*, with the rights of the
   calling process: only use files you trust.

Grammar of spec strings
-----------------------
Layers are separated by ``,``; ``-`` also means "then" and is used to attach an
activation and options to a layer (``conv3x3-same-w1.5-relu``)::

    network := [ "1d:" | "2d:" | "3d:" ] sequence
    sequence := chain ("," chain)*
    chain    := unit ("-" (unit | option))*
    unit     := "(" sequence ")" ["*" N]            group, spliced (repeated N times)
              | "res(" sequence ["|" sequence] ")" ["*" N]   residual block
              | "serial(" [sequence] ")" ["*" N]     a nested serial network
              | "parallel(" sequence ("|" sequence)* ")" ["*" N]
              | layer | activation | preset

* layers: ``conv<K>[s<S>]`` (Conv, padding SAME; ``<K>`` is ``3`` — that size along
  every spatial axis, 2 by default, set by a ``1d:``/``2d:``/``3d:`` prefix or the
  input shape — or explicit ``3x3``, ``5x1``; ``s<S>`` strides likewise, default 1),
  ``avgpool<K>[s<S>]`` (AvgPool, padding VALID; stride = the window unless ``s<S>``
  is given, e.g. ``avgpool2`` halves an image), ``gap`` (GlobalAvgPool), ``flatten``,
  ``dense``, ``layernorm[(eps)]``, ``fanout<N>``, ``faninsum``;
* options, after ``-``, modifying the layer before them: ``same``, ``valid``,
  ``circular`` (padding), ``w<σ>``, ``b<σ>`` (σ_w, σ_b: a number or ``sqrt<x>``, e.g.
  ``wsqrt2``; no ``b`` = no bias), ``s<S>`` (strides), ``nostride`` (AvgPool
  strides=None: neural-tangents' default, stride 1), ``standard`` (parameterization),
  ``width<N>``;
* activations (:mod:`ntkfast.activations`): ``relu``, ``leaky_relu(0.1)``, ``abs``,
  ``abrelu(a,b)``, ``erf(a,b,c)``, ``gelu``, ``identity``, ``tanh``, ``softplus``,
  ``sigmoid``, ``silu``, ``sin(a,b,c)``, ``cos(a,b,c)``; arguments positional or
  ``name=value`` (``tanh(degree=50)``);
* ``(conv3x3-relu)*3``: the group three times;
* ``res(A)``: ``FanOut(2), parallel(serial(A), Identity()), FanInSum()``;
  ``res(A | B)``: with the shortcut branch B instead of the identity;
* presets: ``myrtle5``, ``myrtle7``, ``myrtle10`` (Shankar et al. 2020), ``cnn-gap``,
  ``cnn-flatten`` (optionally with a depth: ``cnn-gap(3)``); see :data:`PRESETS`.

Examples::

    conv3x3-relu,conv3x3-relu,avgpool2,conv3x3-relu,gap,dense
    (conv3-wsqrt2-b0.1-relu)*4,flatten,dense
    conv3x3-relu,res(conv3x3-relu,conv3x3)*2,relu,gap,dense-w2
    1d:conv5s2-valid-erf(1,2,0),gap,dense
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re

from .activations import (ABReLU, Abs, Activation, Cos, Custom, Erf, GELU, Identity,
                          LeakyReLU, ReLU, SiLU, Sigmoid, Sin, Softplus, Tanh)
from .layers import (AvgPool, Conv, Dense, FanInSum, FanOut, Flatten, GlobalAvgPool, Layer,
                     LayerNorm, Parallel, Serial)
from .layers.elementwise import Elementwise

__all__ = ["parse_architecture", "format_architecture", "network_from_description",
           "ArchitectureSpecError", "PRESETS", "GRAMMAR_HELP"]


def __dir__():  # the API, not this module's imports
    return list(__all__)


class ArchitectureSpecError(ValueError):
    """A spec that cannot be read; the message points at the bad token."""


#: activation names of the grammar (aliases: leakyrelu, linear, swish)
ACTIVATIONS = {"relu": ReLU, "leaky_relu": LeakyReLU, "abs": Abs, "abrelu": ABReLU,
               "erf": Erf, "gelu": GELU, "identity": Identity, "tanh": Tanh,
               "softplus": Softplus, "sigmoid": Sigmoid, "silu": SiLU, "sin": Sin,
               "cos": Cos}
_ALIASES = {"leakyrelu": "leaky_relu", "linear": "identity", "swish": "silu",
            "globalavgpool": "gap"}

_MYRTLE = {5: (2, 1, 1), 7: (2, 2, 2), 10: (3, 3, 3)}


def _myrtle(depth):
    a, b, c = _MYRTLE[depth]
    conv = "conv3-wsqrt2-relu"
    return (f"({conv})*{a},avgpool2,({conv})*{b},avgpool2,({conv})*{c},gap,"
            "dense-wsqrt2")


def _cnn(readout):
    def text(depth=2):
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"the depth must be an integer >= 0, got {depth!r}")
        convs = f"(conv3-wsqrt2-b0.1-relu)*{depth}," if depth else ""
        return f"{convs}{readout},dense-b0.1"
    return text


#: name → function of the preset's optional arguments returning its spec string
PRESETS = {
    # Shankar et al. 2020 ("Neural kernels without tangents"), as neural-tangents'
    # Myrtle example: 3×3 SAME convs with ReLU (σ_w = √2, no bias) in three stages of
    # (2,1,1) / (2,2,2) / (3,3,3) convs separated by 2×2 average pools of stride 2,
    # then a global average (nt's example pools 2×2 three times more and flattens:
    # the same kernel on 32×32 inputs) and a dense readout (σ_w = √2).
    "myrtle5": lambda: _myrtle(5),
    "myrtle7": lambda: _myrtle(7),
    "myrtle10": lambda: _myrtle(10),
    # Novak et al. 2019's CNN-GAP / CNN-Flatten with (conv3-relu)×depth (default 2,
    # σ_w = √2, σ_b = 0.1), the README's digits architectures
    "cnn-gap": _cnn("gap"),
    "cnn-flatten": _cnn("flatten"),
}

GRAMMAR_HELP = """\
architecture specs (--arch): layers separated by ',' ('-' attaches an activation or an
option to the layer before it):
  conv<K>[s<S>]  Conv, padding SAME (conv3x3, conv3 = 3 along every spatial axis, conv5x1s2)
  avgpool<K>[s<S>]  AvgPool, padding VALID, stride = window unless s<S> (avgpool2)
  gap, flatten, dense, layernorm, fanout<N>, faninsum
  options: same|valid|circular, w<σ>, b<σ> (e.g. wsqrt2, b0.1; no b = no bias),
           s<S>, nostride, standard, width<N>
  activations: relu, leaky_relu(0.1), abs, abrelu(a,b), erf(a,b,c), gelu, identity,
           tanh, softplus, sigmoid, silu, sin(a,b,c), cos(a,b,c)
  (A)*3 repeats; res(A) is a residual block A + identity, res(A | B) with shortcut B;
  serial(A), parallel(A | B) nest; a 1d:/2d:/3d: prefix sets the size of conv3, avgpool2
  presets: myrtle5, myrtle7, myrtle10, cnn-gap, cnn-flatten (cnn-gap(3): depth 3)
  or a .json file (json.dump(net.describe())) or a .py file defining `network` (it is
  executed: only use files you trust)
  e.g.  --arch 'conv3x3-relu,conv3x3-relu,avgpool2,conv3x3-relu,gap,dense'
        --arch '(conv3-wsqrt2-relu)*3,res(conv3-relu,conv3),relu,gap,dense'
        --arch myrtle5 --input-shape 32,32,3
"""

_LAYER_FORMS = ("conv<K>[s<S>]", "avgpool<K>[s<S>]", "gap", "flatten", "dense", "layernorm",
                "fanout<N>", "faninsum", "res(...)", "serial(...)", "parallel(...|...)")
_OPTION_FORMS = ("same", "valid", "circular", "w<σ>", "b<σ>", "s<S>", "nostride",
                 "standard", "width<N>")
_SIMPLE = ("gap", "flatten", "dense", "layernorm", "faninsum", "res", "serial", "parallel",
           "conv3x3", "conv3", "avgpool2", "fanout2")


def _valid_names():
    return (f"layers: {', '.join(_LAYER_FORMS)}; activations: "
            f"{', '.join(ACTIVATIONS)}; presets: {', '.join(PRESETS)}; options after '-': "
            f"{', '.join(_OPTION_FORMS)}")


# -- numbers ---------------------------------------------------------------------------
def _num(x) -> str:
    """Shortest text of a float that reads back exactly (1.0 → '1')."""
    x = float(x)
    if x == int(x) and abs(x) < 1e16:
        return str(int(x))
    return repr(x)


def _sigma_text(s) -> str:
    """σ as text: the number, or 'sqrt<x>' where that is shorter and exact (√2)."""
    plain = _num(s)
    sq = round(s * s, 10)
    if sq > 0 and math.sqrt(sq) == s:
        alt = "sqrt" + _num(sq)
        if len(alt) < len(plain):
            return alt
    return plain


def _read_sigma(text):
    t = text[4:] if text.startswith("sqrt") else text
    value = float(t)  # ValueError: reported by the caller
    if not math.isfinite(value):
        raise ValueError
    return math.sqrt(value) if text.startswith("sqrt") else value


def _read_window(text, dims):
    parts = [int(p) for p in text.split("x")]
    if len(parts) == 1:
        parts = parts * dims
    return tuple(parts)


# -- the parser ------------------------------------------------------------------------
_WORD = re.compile(r"[A-Za-z_](?:[A-Za-z0-9_.]|(?<=[0-9][eE])[+-](?=[0-9]))*")
_CONV = re.compile(r"conv(\d+(?:x\d+)*)(?:s(\d+(?:x\d+)*))?")
_POOL = re.compile(r"avgpool(\d+(?:x\d+)*)(?:s(\d+(?:x\d+)*))?")
_FANOUT = re.compile(r"fanout(\d+)")
_STRIDE = re.compile(r"s(\d+(?:x\d+)*)")
_WIDTH = re.compile(r"width(\d+)")
_PREFIX = re.compile(r"\s*([123])d\s*:")


class _Pending:
    """A linear layer being read: options after '-' still modify it."""

    def __init__(self, kind, params, start, end):
        self.kind, self.params, self.start, self.end = kind, params, start, end


class _Parser:
    def __init__(self, text, spatial_dims):
        self.text = text
        self.pos = 0
        self.dims = spatial_dims
        m = _PREFIX.match(text)
        if m:
            self.dims = int(m.group(1))
            self.pos = m.end()

    # -- errors and characters
    def error(self, msg, start, end=None, hint=None):
        end = max(start + 1, end if end is not None else start + 1)
        shown = self.text
        caret = " " * start + "^" * min(end - start, max(1, len(shown) - start))
        lines = [f"architecture: {msg}", f"  {shown}", f"  {caret}"]
        if hint:
            lines.append(hint)
        raise ArchitectureSpecError("\n".join(lines))

    def ws(self):
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self):
        self.ws()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, ch, what):
        if self.peek() != ch:
            got = repr(self.peek()) if self.peek() else "the end"
            self.error(f"expected {ch!r} {what}, got {got}", self.pos)
        self.pos += 1

    # -- grammar
    def parse(self):
        if not self.text[self.pos:].strip():
            self.error("empty architecture spec", 0, hint=_valid_names())
        layers = self.sequence()
        if self.pos < len(self.text):
            ch = self.text[self.pos]
            hint = ("')' without a matching '('" if ch == ")" else
                    "'|' separates branches only inside res(...) or parallel(...)"
                    if ch == "|" else "separate layers with ',' or '-'")
            self.error(f"unexpected {ch!r}", self.pos, hint=hint)
        return layers

    def sequence(self):
        out = []
        while True:
            if self.peek() in (",", ")", "|", ""):
                self.error("expected a layer", self.pos, hint=_valid_names())
            out.extend(self.chain())
            if self.peek() == ",":
                self.pos += 1
                continue
            return out

    def chain(self):
        out = []
        pending = self.unit(out, None)
        self.no_repeat()
        while self.peek() == "-":
            self.pos += 1
            pending = self.unit(out, pending)
            self.no_repeat()
        self.flush(out, pending)
        return out

    def no_repeat(self):
        if self.peek() == "*":
            self.error("a repeat needs parentheses around what it repeats, e.g. "
                       "(conv3x3-relu)*3", self.pos)

    def flush(self, out, pending):
        if pending is not None:
            out.append(self.build(pending))

    def repeat(self, layers, start):
        """A '*N' after a parenthesised construct: the layers N times."""
        if self.peek() != "*":
            return layers
        self.pos += 1
        self.ws()
        m = re.compile(r"\d+").match(self.text, self.pos)
        if not m:
            self.error("expected a repeat count after '*', e.g. (conv3x3-relu)*3", self.pos)
        self.pos = m.end()
        n = int(m.group())
        if n < 1:
            self.error("the repeat count must be >= 1", m.start(), m.end())
        return list(layers) * n

    def unit(self, out, pending):
        """Read one unit; options modify ``pending`` (returned), other units flush it
        into ``out``; returns the new pending linear layer or None."""
        self.ws()
        start = self.pos
        if self.peek() == "(":
            self.flush(out, pending)
            self.pos += 1
            inner = self.sequence()
            self.expect(")", "to close the group")
            out.extend(self.repeat(inner, start))
            return None
        word = self.word()
        low = word.lower()
        end = self.pos
        # options
        option = self.option(low, start, end)
        if option is not None:
            if pending is None:
                self.error(f"option {word!r} must follow a conv, avgpool or dense layer "
                           "(e.g. conv3x3-same-w1.5)", start, end)
            key, value = option
            allowed = {"conv": ("padding", "strides", "w_std", "b_std", "parameterization",
                                "width"),
                       "avgpool": ("padding", "strides"),
                       "dense": ("w_std", "b_std", "parameterization", "width")}
            if key not in allowed[pending.kind]:
                self.error(f"option {word!r} does not apply to {pending.kind}", start, end,
                           hint=f"{pending.kind} takes: {', '.join(allowed[pending.kind])}")
            pending.params[key] = value
            pending.end = end
            return pending
        self.flush(out, pending)
        low = _ALIASES.get(low, low)
        # compound forms with a parenthesised sequence
        if low in ("res", "serial", "parallel") and self.peek() == "(":
            self.pos += 1
            layers = self.compound(low, start)
            out.extend(self.repeat(layers, start))
            return None
        # presets (may contain '-': cnn-gap)
        if low in PRESETS:
            args = self.args(start) if self.peek() == "(" else ([], {})
            try:
                text = PRESETS[low](*args[0], **args[1])
            except (TypeError, ValueError) as exc:
                self.error(f"preset {word!r}: {exc}", start, self.pos)
            sub = _Parser(text, self.dims)
            out.extend(sub.parse())
            return None
        m = _CONV.fullmatch(low)
        if m:
            return _Pending("conv", {"filter_shape": self.window(m.group(1), start, end),
                                     "strides": self.window(m.group(2), start, end)},
                            start, end)
        m = _POOL.fullmatch(low)
        if m:
            window = self.window(m.group(1), start, end)
            strides = self.window(m.group(2), start, end) if m.group(2) else window
            return _Pending("avgpool", {"window_shape": window, "strides": strides},
                            start, end)
        if low == "dense":
            return _Pending("dense", {}, start, end)
        if low == "gap":
            out.append(GlobalAvgPool())
            return None
        if low == "flatten":
            out.append(Flatten())
            return None
        if low == "faninsum":
            out.append(FanInSum())
            return None
        m = _FANOUT.fullmatch(low)
        if m or low == "fanout":
            args = ([int(m.group(1))], {}) if m else \
                self.args(start) if self.peek() == "(" else ([], {})
            out.append(self.construct(FanOut, args, word, start))
            return None
        if low == "layernorm":
            args = self.args(start) if self.peek() == "(" else ([], {})
            out.append(self.construct(LayerNorm, args, word, start))
            return None
        if low in ACTIVATIONS:
            args = self.args(start) if self.peek() == "(" else ([], {})
            act = self.construct(ACTIVATIONS[low], args, word, start)
            out.append(Elementwise(act))
            return None
        self.unknown(word, start, end)

    def unknown(self, word, start, end):
        names = list(ACTIVATIONS) + list(PRESETS) + list(_SIMPLE) + list(_ALIASES)
        close = difflib.get_close_matches(word.lower(), names, n=3)
        hint = (f"did you mean {' or '.join(map(repr, close))}? " if close else "") + \
            _valid_names()
        self.error(f"unknown layer {word!r}", start, end, hint=hint)

    def word(self):
        self.ws()
        start = self.pos
        for name in sorted(PRESETS, key=len, reverse=True):  # names with '-'
            if "-" in name and self.text[start:start + len(name)].lower() == name:
                after = self.text[start + len(name):start + len(name) + 1]
                if not after or not (after.isalnum() or after in "_."):
                    self.pos = start + len(name)
                    return self.text[start:self.pos]
        m = _WORD.match(self.text, start)
        if not m:
            ch = self.text[start] if start < len(self.text) else ""
            self.error(f"expected a layer name, got {ch!r}" if ch else
                       "expected a layer name, got the end", start, hint=_valid_names())
        self.pos = m.end()
        return m.group()

    def window(self, text, start, end):
        if text is None:
            return None
        try:
            return _read_window(text, self.dims)
        except ValueError:  # pragma: no cover - the regex admits digits only
            self.error(f"bad window {text!r}", start, end)

    def option(self, low, start, end):
        if low in ("same", "valid", "circular"):
            return "padding", low.upper()
        if low == "nostride":
            return "strides", None
        if low in ("standard", "ntk"):
            return "parameterization", low
        m = _WIDTH.fullmatch(low)
        if m:
            return "width", int(m.group(1))
        m = _STRIDE.fullmatch(low)
        if m:
            return "strides", self.window(m.group(1), start, end)
        if low in ("w", "b"):
            self.error(f"option {low!r} needs a value: {low}<σ>, e.g. {low}1.5 or "
                       f"{low}sqrt2", start, end)
        if low[:1] in ("w", "b") and low[1:2] and (low[1].isdigit() or low[1] == "."
                                                  or low[1:].startswith("sqrt")):
            try:
                return ("w_std" if low[0] == "w" else "b_std"), _read_sigma(low[1:])
            except ValueError:
                self.error(f"option {low!r}: {low[0]}<σ> needs a number or sqrt<number>, "
                           "e.g. w1.5, wsqrt2, b0.1", start, end)
        return None

    def args(self, start):
        """'(1, 2.5, rule=hermite)' → ([1, 2.5], {'rule': 'hermite'})."""
        self.expect("(", "")
        close = self.text.find(")", self.pos)
        if close < 0:
            self.error("unclosed '('", self.pos - 1)
        body = self.text[self.pos:close]
        pos, kwargs = [], {}
        for part in body.split(","):
            part = part.strip()
            if not part:
                if body.strip():
                    self.error("empty argument", self.pos, close)
                continue
            key, _, value = part.rpartition("=")
            value = _literal(value.strip())
            if key:
                kwargs[key.strip()] = value
            elif kwargs:
                self.error("a positional argument after a keyword argument", self.pos, close)
            else:
                pos.append(value)
        self.pos = close + 1
        return pos, kwargs

    def construct(self, cls, args, word, start):
        try:
            return cls(*args[0], **args[1])
        except (TypeError, ValueError) as exc:
            self.error(f"{word}: {exc}", start, self.pos)

    def build(self, p):
        kind = {"conv": Conv, "avgpool": AvgPool, "dense": Dense}[p.kind]
        try:
            return kind(**p.params)
        except (TypeError, ValueError) as exc:
            self.error(str(exc), p.start, p.end)

    def compound(self, kind, start):
        branches = [self.sequence()] if kind != "serial" or self.peek() != ")" else [[]]
        while self.peek() == "|":
            if kind == "serial":
                self.error("serial(...) has one sequence; use parallel(A | B) for "
                           "branches", self.pos)
            self.pos += 1
            branches.append(self.sequence())
        self.expect(")", f"to close {kind}(")
        if kind == "serial":
            return [Serial(*branches[0])]
        if kind == "res":
            if len(branches) > 2:
                self.error("res(A | B) takes a main branch and at most one shortcut",
                           start, self.pos)
            shortcut = _branch(branches[1]) if len(branches) == 2 else \
                Elementwise(Identity())
            return [FanOut(2), Parallel(Serial(*branches[0]), shortcut), FanInSum()]
        return [Parallel(*[_branch(b) for b in branches])]


def _branch(layers):
    """A parallel branch: the one layer itself, or a serial network of several."""
    return layers[0] if len(layers) == 1 else Serial(*layers)


def _literal(text):
    t = text.strip().strip("'\"")
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    if t.lower() in ("none",):
        return None
    return t


# -- JSON (describe() form) ------------------------------------------------------------
_LAYER_KEYS = {
    "Dense": (Dense, ("w_std", "b_std", "parameterization", "width")),
    "Conv": (Conv, ("filter_shape", "strides", "padding", "w_std", "b_std",
                    "parameterization", "width")),
    "AvgPool": (AvgPool, ("window_shape", "strides", "padding")),
    "GlobalAvgPool": (GlobalAvgPool, ()),
    "Flatten": (Flatten, ()),
    "FanOut": (FanOut, ("num",)),
    "FanInSum": (FanInSum, ()),
    "LayerNorm": (LayerNorm, ("eps",)),
}
_ALL_KINDS = ("Serial", "Parallel", "Elementwise", *_LAYER_KEYS)


def _activation_from_key(key, where):
    """The activation whose ``describe()`` (its ``_key()``, as a JSON list) is ``key``."""
    if isinstance(key, str):
        layers = _Parser(key, 2).parse()
        if len(layers) != 1 or not isinstance(layers[0], Elementwise):
            raise ArchitectureSpecError(f"{where}: activation {key!r} is not one activation")
        return layers[0].activation
    if not isinstance(key, list) or not key or not isinstance(key[0], str):
        raise ArchitectureSpecError(f"{where}: activation must be a name such as 'relu' or "
                                    f"a describe() list such as ['ABReLU', 0.0, 1.0], got "
                                    f"{key!r}")
    name, args = key[0], key[1:]
    try:
        if name == "ABReLU":
            a, b = args
            if (a, b) == (0.0, 1.0):
                return ReLU()
            if (a, b) == (-1.0, 1.0):
                return Abs()
            return LeakyReLU(a) if b == 1.0 else ABReLU(a, b)
        if name in ("Erf", "Sin"):
            return {"Erf": Erf, "Sin": Sin}[name](*args)
        if name in ("GELU", "Identity") and not args:
            return {"GELU": GELU, "Identity": Identity}[name]()
        quad = {"Tanh": Tanh, "Softplus": Softplus, "Sigmoid": Sigmoid, "SiLU": SiLU}
        if name in quad:
            degree, rule = args
            return quad[name](degree=degree, rule=rule)
    except (TypeError, ValueError) as exc:
        raise ArchitectureSpecError(f"{where}: activation {key!r}: {exc}") from None
    if name == "Custom":
        raise ArchitectureSpecError(f"{where}: a Custom activation cannot be rebuilt from "
                                    "JSON (its function is not stored); define the network "
                                    "in a .py file instead")
    raise ArchitectureSpecError(f"{where}: unknown activation {key!r}")


def network_from_description(desc, where="network"):
    """The layer (or network) whose ``describe()`` is ``desc``; a list of layer dicts is
    a serial network.  Errors name the place (``network.layers[2]``)."""
    if isinstance(desc, list):
        return Serial(*[network_from_description(d, f"{where}[{i}]")
                        for i, d in enumerate(desc)])
    if not isinstance(desc, dict) or not isinstance(desc.get("layer"), str):
        raise ArchitectureSpecError(f"{where}: expected a layer object {{\"layer\": ...}} "
                                    f"or a list of them, got {desc!r}"[:300])
    kind = desc["layer"]
    rest = {k: v for k, v in desc.items() if k != "layer"}

    def check_keys(allowed):
        extra = sorted(set(rest) - set(allowed))
        if extra:
            raise ArchitectureSpecError(f"{where} ({kind}): unknown key(s) {extra}; "
                                        f"valid: {', '.join(allowed) or 'none'}")

    if kind == "Serial":
        check_keys(("layers",))
        layers = rest.get("layers", [])
        if not isinstance(layers, list):
            raise ArchitectureSpecError(f"{where} (Serial): 'layers' must be a list")
        return Serial(*[network_from_description(d, f"{where}.layers[{i}]")
                        for i, d in enumerate(layers)])
    if kind == "Parallel":
        check_keys(("branches",))
        branches = rest.get("branches")
        if not isinstance(branches, list) or not branches:
            raise ArchitectureSpecError(f"{where} (Parallel): 'branches' must be a "
                                        "non-empty list")
        return Parallel(*[network_from_description(d, f"{where}.branches[{i}]")
                          for i, d in enumerate(branches)])
    if kind == "Elementwise":
        check_keys(("activation",))
        if "activation" not in rest:
            raise ArchitectureSpecError(f"{where} (Elementwise): needs 'activation'")
        return Elementwise(_activation_from_key(rest["activation"], where))
    if kind not in _LAYER_KEYS:
        close = difflib.get_close_matches(kind, _ALL_KINDS, n=2)
        raise ArchitectureSpecError(
            f"{where}: unknown layer {kind!r}" +
            (f" (did you mean {' or '.join(map(repr, close))}?)" if close else "") +
            f"; valid: {', '.join(_ALL_KINDS)}")
    cls, keys = _LAYER_KEYS[kind]
    check_keys(keys)
    try:
        return cls(**rest)
    except (TypeError, ValueError) as exc:
        raise ArchitectureSpecError(f"{where} ({kind}): {exc}") from None


# -- files -----------------------------------------------------------------------------
def _from_python(path):
    import ntkfast
    with open(path) as f:
        source = f.read()
    namespace = {"__name__": "__ntkfast_architecture__", "__file__": path, "nk": ntkfast,
                 "ntkfast": ntkfast}
    try:
        exec(compile(source, path, "exec"), namespace)  # noqa: S102 - documented: runs code
    except Exception as exc:  # noqa: BLE001 - any error of the user's file, with its line
        import traceback
        lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__)
                 if f.filename == path]
        line = getattr(exc, "lineno", None) if isinstance(exc, SyntaxError) else \
            (lines[-1] if lines else None)
        raise ArchitectureSpecError(
            f"architecture: running {path}" + (f" failed at line {line}" if line else
                                               " failed") +
            f": {type(exc).__name__}: {exc}") from exc
    if "network" not in namespace:
        defined = sorted(k for k in namespace if not k.startswith("__") and
                         k not in ("nk", "ntkfast"))
        raise ArchitectureSpecError(f"architecture: {path} does not define `network` "
                                    f"(defines: {', '.join(defined) or 'nothing'}); end it "
                                    "with e.g. network = nk.serial(nk.Dense(), nk.ReLU(), "
                                    "nk.Dense())")
    return _as_serial(namespace["network"], f"{path}: network")


def _as_serial(obj, where):
    from .network import MLP
    if isinstance(obj, Serial):
        return obj
    if isinstance(obj, MLP):
        return Serial(*_mlp_layers(obj))
    if isinstance(obj, (Layer, Activation)):
        return Serial(obj)
    raise ArchitectureSpecError(f"architecture: {where} must be a network (nk.serial(...)),"
                                f" a layer or an nk.MLP, got {type(obj).__name__}")


def _mlp_layers(mlp):
    """The layers of an ``nk.MLP`` (the chain Dense, [φ, Dense] × depth)."""
    std = mlp.parameterization == "standard"
    kw = dict(w_std=mlp.w_std, b_std=mlp.b_std, parameterization=mlp.parameterization)
    hidden = dict(kw, width=mlp.width) if std else kw
    layers = [Dense(**(hidden if mlp.depth else kw))]
    for i in range(mlp.depth):
        layers += [Elementwise(mlp.activation),
                   Dense(**(hidden if i < mlp.depth - 1 else kw))]
    return layers


def _read_json(text, where):
    try:
        desc = json.loads(text)
    except ValueError as exc:
        raise ArchitectureSpecError(f"architecture: {where} is not valid JSON ({exc})") \
            from None
    return _as_serial(network_from_description(desc), where)


def parse_architecture(text_or_path, *, spatial_dims=None) -> Serial:
    """A network (``nk.serial``) from a spec string, a ``.json`` file (or JSON text) of
    its ``describe()`` form, or a ``.py`` file defining ``network`` (executed: only use
    files you trust).  See the module docstring for the grammar.

    ``spatial_dims``: how many spatial axes a single-number window (``conv3``,
    ``avgpool2``) spans (default 2, images; a ``1d:``/``2d:``/``3d:`` prefix of the spec
    overrides it).  Raises :class:`ArchitectureSpecError` (a ValueError) pointing at
    the bad token; network objects are passed through (an ``nk.MLP`` becomes its
    serial chain).
    """
    from .network import MLP
    if isinstance(text_or_path, (Layer, MLP)):
        return _as_serial(text_or_path, "architecture")
    if isinstance(text_or_path, os.PathLike):
        text_or_path = os.fspath(text_or_path)
    if not isinstance(text_or_path, str):
        raise TypeError(f"architecture: expected a spec string or a path, got "
                        f"{type(text_or_path).__name__}")
    text = text_or_path.strip()
    lower = text.lower()
    if lower.endswith((".json", ".py")):
        if not os.path.isfile(text):
            raise FileNotFoundError(f"architecture: file {text!r} not found")
        if lower.endswith(".py"):
            return _from_python(text)
        with open(text) as f:
            return _read_json(f.read(), text)
    if text.startswith(("{", "[")):
        return _read_json(text, "the JSON text")
    dims = 2 if spatial_dims is None else int(spatial_dims)
    if dims < 1:
        dims = 2
    return Serial(*_Parser(text_or_path, dims).parse())


# -- formatting -----------------------------------------------------------------------
def _activation_text(act):
    key = act._key()
    name = key[0]
    if name == "ABReLU":
        a, b = key[1], key[2]
        if (a, b) == (0.0, 1.0):
            return "relu"
        if (a, b) == (-1.0, 1.0):
            return "abs"
        if b == 1.0:
            return f"leaky_relu({_num(a)})"
        return f"abrelu({_num(a)},{_num(b)})"
    if name in ("Erf", "Sin"):
        a, b, c = key[1:]
        low = name.lower()
        return low if (a, b, c) == (1.0, 1.0, 0.0) else f"{low}({_num(a)},{_num(b)},{_num(c)})"
    if name in ("GELU", "Identity"):
        return name.lower()
    if name in ("Tanh", "Softplus", "Sigmoid", "SiLU"):
        degree, rule = key[1:]
        args = ([f"degree={degree}"] if degree is not None else []) + \
            ([f"rule={rule}"] if rule != "trapezoid" else [])
        return name.lower() + (f"({','.join(args)})" if args else "")
    if isinstance(act, Custom):
        raise ValueError(f"format_architecture: the Custom activation {act!r} has no spec "
                         "text; write the network in a .py file")
    raise ValueError(f"format_architecture: no spec text for the activation {act!r}")


def _window_text(w):
    return "x".join(str(v) for v in w)


def _stride_text(s):
    return str(s[0]) if len(set(s)) == 1 else _window_text(s)


def _affine_options(layer):
    opts = []
    if layer.w_std != 1.0:
        opts.append("w" + _sigma_text(layer.w_std))
    if layer.b_std is not None:
        opts.append("b" + _sigma_text(layer.b_std))
    if layer.parameterization != "ntk":
        opts.append(layer.parameterization)
    if layer.width is not None:
        opts.append(f"width{layer.width}")
    return opts


def _unit_text(layer, dims1):
    if isinstance(layer, Elementwise):
        return _activation_text(layer.activation)
    if isinstance(layer, Dense):
        return "-".join(["dense", *_affine_options(layer)])
    if isinstance(layer, Conv):
        if len(layer.filter_shape) == 1:
            dims1.append(True)
        head = "conv" + _window_text(layer.filter_shape)
        if layer.strides is not None:
            head += "s" + _stride_text(layer.strides)
        opts = [] if layer.padding == "SAME" else [layer.padding.lower()]
        return "-".join([head, *opts, *_affine_options(layer)])
    if isinstance(layer, AvgPool):
        if len(layer.window_shape) == 1:
            dims1.append(True)
        head = "avgpool" + _window_text(layer.window_shape)
        opts = []
        if layer.strides is None:
            opts.append("nostride")
        elif layer.strides != layer.window_shape:
            head += "s" + _stride_text(layer.strides)
        if layer.padding != "VALID":
            opts.append(layer.padding.lower())
        return "-".join([head, *opts])
    if isinstance(layer, GlobalAvgPool):
        return "gap"
    if isinstance(layer, Flatten):
        return "flatten"
    if isinstance(layer, FanInSum):
        return "faninsum"
    if isinstance(layer, FanOut):
        return f"fanout{layer.num}"
    if isinstance(layer, LayerNorm):
        return "layernorm" if layer.eps == 1e-12 else f"layernorm({_num(layer.eps)})"
    if isinstance(layer, Serial):
        return f"serial({_seq_text(layer.layers, dims1)})"
    if isinstance(layer, Parallel):
        return "parallel(" + " | ".join(_branch_text(b, dims1) for b in layer.branches) + ")"
    raise ValueError(f"format_architecture: no spec text for the layer {layer!r}")


def _branch_text(b, dims1):
    if isinstance(b, Serial):
        if len(b.layers) >= 2:
            return _seq_text(b.layers, dims1)
        return f"serial({_seq_text(b.layers, dims1)})"
    return _unit_text(b, dims1)


def _is_identity(layer):
    return isinstance(layer, Elementwise) and isinstance(layer.activation, Identity)


def _seq_text(layers, dims1):
    # units (residual blocks recognised), each with "is an activation"
    units, i = [], 0
    while i < len(layers):
        l = layers[i]
        if (isinstance(l, FanOut) and l.num == 2 and i + 2 < len(layers)
                and isinstance(layers[i + 1], Parallel) and isinstance(layers[i + 2], FanInSum)
                and len(layers[i + 1].branches) == 2
                and isinstance(layers[i + 1].branches[0], Serial)
                and layers[i + 1].branches[0].layers):
            main, short = layers[i + 1].branches
            text = "res(" + _seq_text(main.layers, dims1)
            if not _is_identity(short):
                text += " | " + _branch_text(short, dims1)
            units.append((text + ")", False, False))
            i += 3
            continue
        units.append((_unit_text(l, dims1), isinstance(l, Elementwise),
                      isinstance(l, (Dense, Conv))))
        i += 1
    # chains: an activation joins the Dense/Conv before it with '-' (conv3x3-relu)
    chains, joinable = [], False
    for text, is_act, affine in units:
        if is_act and joinable:
            chains[-1] += "-" + text
            joinable = False
        else:
            chains.append(text)
            joinable = affine
    # repeats: at each position the smallest block that repeats, as often as it does
    out, i = [], 0
    while i < len(chains):
        size, n = 1, 1
        for size in range(1, (len(chains) - i) // 2 + 1):  # the smallest repeated block
            block = chains[i:i + size]
            n = 1
            while chains[i + n * size:i + (n + 1) * size] == block:
                n += 1
            if n > 1:
                break
        if n == 1:
            size = 1
        if n > 1 and size == 1 and _one_compound(chains[i]):
            out.append(f"{chains[i]}*{n}")                    # res(...)*2
        elif n > 1:
            out.append(f"({','.join(chains[i:i + size])})*{n}")
        else:
            out.append(chains[i])
        i += size * n
    return ",".join(out)


def _one_compound(text):
    """Is ``text`` one res(...)/serial(...)/parallel(...) (its '(' closed at the end)?"""
    head = text.split("(", 1)[0]
    if head not in ("res", "serial", "parallel") or not text.endswith(")"):
        return False
    depth = 0
    for k, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and ch == ")":
            return k == len(text) - 1
    return False


def format_architecture(network) -> str:
    """The spec string of a network (``nk.serial``, a layer, or an ``nk.MLP``):
    ``parse_architecture(format_architecture(net)) == net`` for serial networks.
    Residual blocks are written ``res(...)``, repeated runs ``(...)*N``; windows are
    written out in full (``conv3x3``), one-dimensional ones with a ``1d:`` prefix."""
    from .network import MLP
    if isinstance(network, MLP):
        layers = _mlp_layers(network)
    elif isinstance(network, Serial):
        layers = network.layers
    elif isinstance(network, (Layer, Activation)):
        layers = Serial(network).layers
    else:
        raise TypeError(f"format_architecture: expected a network, got "
                        f"{type(network).__name__}")
    if not layers:
        raise ValueError("format_architecture: the network has no layers")
    dims1 = []
    text = _seq_text(layers, dims1)
    return ("1d:" if dims1 else "") + text
