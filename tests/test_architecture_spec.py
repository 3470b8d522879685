"""ntkfast.architecture_spec: spec strings, JSON and .py files ↔ networks."""

import json
import math

import numpy as np
import pytest

import ntkfast as nk
from ntkfast.architecture_spec import (ArchitectureSpecError, format_architecture,
                                       network_from_description, parse_architecture)

S2 = math.sqrt(2)


def residual(*main, shortcut=None):
    return [nk.FanOut(2), nk.parallel(nk.serial(*main), shortcut or nk.Identity()),
            nk.FanInSum()]


@pytest.mark.parametrize("text, layers", [
    ("conv3x3-relu,conv3x3-relu,avgpool2,conv3x3-relu,gap,dense",
     [nk.Conv((3, 3)), nk.ReLU(), nk.Conv((3, 3)), nk.ReLU(), nk.AvgPool((2, 2), (2, 2)),
      nk.Conv((3, 3)), nk.ReLU(), nk.GlobalAvgPool(), nk.Dense()]),
    ("(conv3-wsqrt2-b0.1-relu)*2,flatten,dense-w1.5-b1e-3",
     [nk.Conv((3, 3), w_std=S2, b_std=0.1), nk.ReLU()] * 2 +
     [nk.Flatten(), nk.Dense(1.5, 1e-3)]),
    ("conv5x1s2x1-valid-leaky_relu(0.1),conv3s2-circular-erf(2,0.5,0.3),avgpool3s1-same,gap,"
     "dense-standard-width8",
     [nk.Conv((5, 1), (2, 1), "VALID"), nk.LeakyReLU(0.1), nk.Conv((3, 3), (2, 2), "CIRCULAR"),
      nk.Erf(2, 0.5, 0.3), nk.AvgPool((3, 3), (1, 1), "SAME"), nk.GlobalAvgPool(),
      nk.Dense(parameterization="standard", width=8)]),
    ("conv3x3-relu,res(conv3x3-relu,conv3x3)*2,relu,gap,dense",
     [nk.Conv((3, 3)), nk.ReLU(), *residual(nk.Conv((3, 3)), nk.ReLU(), nk.Conv((3, 3))) * 2,
      nk.ReLU(), nk.GlobalAvgPool(), nk.Dense()]),
    ("1d:conv3-gelu,res(conv3 | conv1s1-b0),layernorm,tanh(degree=50),gap,dense",
     [nk.Conv((3,)), nk.GELU(), *residual(nk.Conv((3,)), shortcut=nk.Conv((1,), (1,),
                                                                        b_std=0.0)),
      nk.LayerNorm(), nk.Tanh(degree=50), nk.GlobalAvgPool(), nk.Dense()]),
    ("dense, abs, serial(dense, sin(1,2,0.5)), fanout3, parallel(identity | dense | "
     "dense-relu,dense), faninsum, Softplus, dense",
     [nk.Dense(), nk.Abs(), nk.serial(nk.Dense(), nk.Sin(1, 2, 0.5)), nk.FanOut(3),
      nk.parallel(nk.Identity(), nk.Dense(), nk.serial(nk.Dense(), nk.ReLU(), nk.Dense())),
      nk.FanInSum(), nk.Softplus(), nk.Dense()]),
])
def test_grammar_examples(text, layers):
    net = parse_architecture(text)
    assert net == nk.serial(*layers)
    assert parse_architecture(format_architecture(net)) == net


def test_presets_myrtle_and_cnn():
    conv = [nk.Conv((3, 3), w_std=S2), nk.ReLU()]
    pool = [nk.AvgPool((2, 2), strides=(2, 2))]
    for name, (a, b, c) in {"myrtle5": (2, 1, 1), "myrtle7": (2, 2, 2),
                            "myrtle10": (3, 3, 3)}.items():
        want = nk.serial(*conv * a, *pool, *conv * b, *pool, *conv * c, nk.GlobalAvgPool(),
                         nk.Dense(w_std=S2))
        assert parse_architecture(name) == want
    cnn = [nk.Conv((3, 3), w_std=S2, b_std=0.1), nk.ReLU()]
    assert parse_architecture("cnn-gap") == nk.serial(*cnn * 2, nk.GlobalAvgPool(),
                                                      nk.Dense(b_std=0.1))
    assert parse_architecture("cnn-flatten(3)") == nk.serial(*cnn * 3, nk.Flatten(),
                                                             nk.Dense(b_std=0.1))
    # signals: the presets' conv3/avgpool2 follow the input's rank
    assert parse_architecture("cnn-gap", spatial_dims=1).layers[0].filter_shape == (3,)
    # Myrtle's global average = neural-tangents' example (2×2 pools down to 1×1, then
    # Flatten), here on 8×8 images where one more pool reaches 1×1
    nt_like = nk.serial(*conv * 2, *pool, *conv, *pool, *conv, *pool, nk.Flatten(),
                        nk.Dense(w_std=S2))
    X = np.random.default_rng(0).standard_normal((3, 8, 8, 2))
    np.testing.assert_allclose(parse_architecture("myrtle5").ntk(X), nt_like.ntk(X),
                               rtol=1e-12)


def every_layer_net():
    return nk.serial(
        nk.Conv((3, 3), w_std=1.7, b_std=0.2), nk.ABReLU(-0.5, 2.0),
        nk.Conv((2, 3), strides=(1, 2), padding="VALID", parameterization="standard",
                width=5),
        nk.Erf(), nk.AvgPool((2, 2)),                               # strides=None
        nk.AvgPool((2, 1), strides=(1, 1), padding="CIRCULAR"),
        nk.serial(nk.Conv((1, 1)), nk.Cos(0.5, 1.5, 0.2)),
        nk.FanOut(2), nk.parallel(nk.serial(nk.Conv((3, 3))), nk.serial(nk.LayerNorm(1e-6))),
        nk.FanInSum(), nk.Sigmoid(), nk.Conv((3, 3)), nk.SiLU(degree=20, rule="hermite"),
        nk.Conv((1, 1)), nk.Identity(), nk.Flatten(), nk.Dense(w_std=0.5), nk.LeakyReLU(0.2),
        nk.Dense(), nk.Tanh(), nk.Dense(), nk.Tanh(), nk.Dense())


@pytest.mark.parametrize("net", [
    every_layer_net(),
    nk.serial(nk.Conv((3,)), nk.ReLU(), nk.AvgPool((2,), (2,)), nk.GlobalAvgPool(),
              nk.Dense()),
    nk.serial(nk.Dense(), nk.serial(nk.ReLU()), nk.parallel(nk.Dense())),
])
def test_format_parse_round_trip(net, tmp_path):
    text = format_architecture(net)
    assert parse_architecture(text) == net, text
    # the JSON form: describe() dumped as a file, as text, and as a bare list
    path = tmp_path / "net.json"
    path.write_text(json.dumps(net.describe()))
    assert parse_architecture(str(path)) == net
    assert parse_architecture(path) == net
    assert parse_architecture(json.dumps(net.describe()["layers"])) == net


def test_format_is_readable_and_mlps_convert():
    assert format_architecture(parse_architecture("myrtle5")) == (
        "(conv3x3-wsqrt2-relu)*2,(avgpool2x2,conv3x3-wsqrt2-relu)*2,gap,dense-wsqrt2")
    assert format_architecture(nk.serial(nk.AvgPool((2, 2)))) == "avgpool2x2-nostride"
    mlp = nk.MLP(3, "erf", w_std=1.5, b_std=0.1, parameterization="standard", width=7)
    net = parse_architecture(format_architecture(mlp))
    X = np.random.default_rng(1).standard_normal((4, 3))
    np.testing.assert_allclose(net.ntk(X, backend="reference"), mlp.ntk(X), rtol=1e-12)
    with pytest.raises(ValueError, match="Custom"):
        format_architecture(nk.serial(nk.Dense(), nk.Custom(lambda u: u * u), nk.Dense()))


def test_json_hand_written_and_errors(tmp_path):
    net = parse_architecture('[{"layer": "Dense", "w_std": 2}, {"layer": "Elementwise", '
                             '"activation": "leaky_relu(0.2)"}, {"layer": "Dense"}]')
    assert net == nk.serial(nk.Dense(2.0), nk.LeakyReLU(0.2), nk.Dense())
    for text, match in [
        ('{"layer": "Conv", "filter": [3, 3]}', r"network \(Conv\): unknown key\(s\) "
                                                r"\['filter'\]; valid: filter_shape"),
        ('[{"layer": "Dens"}]', r"network\[0\]: unknown layer 'Dens' \(did you mean "
                                r"'Dense'\?\)"),
        ('{"layer": "Serial", "layers": [{"layer": "Elementwise", "activation": ["Foo"]}]}',
         r"network.layers\[0\]: unknown activation"),
        ('{"layer": "Conv", "filter_shape": [0, 3]}', "filter_shape must be"),
        ("{not json", "not valid JSON"),
    ]:
        with pytest.raises(ArchitectureSpecError, match=match):
            parse_architecture(text)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        parse_architecture(str(tmp_path / "missing.json"))
    with pytest.raises(ArchitectureSpecError, match="Custom activation cannot be rebuilt"):
        network_from_description({"layer": "Elementwise",
                                  "activation": ["Custom", "name", "sq", False, None, "x"]})


def test_python_files(tmp_path):
    good = tmp_path / "net.py"
    good.write_text("w = 2 ** 0.5\nnetwork = nk.serial(nk.Conv((3, 3), w_std=w), nk.ReLU(), "
                    "nk.GlobalAvgPool(), nk.Dense())\n")
    assert parse_architecture(str(good)) == parse_architecture("conv3x3-wsqrt2-relu,gap,dense")
    mlp = tmp_path / "mlp.py"
    mlp.write_text("network = ntkfast.MLP(2)\n")
    assert parse_architecture(str(mlp))._mlp_equivalent().depth == 2
    missing = tmp_path / "none.py"
    missing.write_text("net = nk.serial(nk.Dense())\n")
    with pytest.raises(ArchitectureSpecError, match=r"does not define `network` "
                                                    r"\(defines: net\)"):
        parse_architecture(str(missing))
    broken = tmp_path / "broken.py"
    broken.write_text("import math\n\nnetwork = nk.serial(nk.Conv((3, 3), padding='SOME'))\n")
    with pytest.raises(ArchitectureSpecError, match="failed at line 3: ValueError: .*padding"):
        parse_architecture(str(broken))


@pytest.mark.parametrize("text, message, token", [
    ("conv3x3-relu,conv3x3-rleu,gap", "unknown layer 'rleu'", "rleu"),
    ("conv3x3-relu*3", "a repeat needs parentheses", "*"),
    ("relu-same", "option 'same' must follow a conv, avgpool or dense", "same"),
    ("avgpool2-w2", "option 'w2' does not apply to avgpool", "w2"),
    ("conv3x3,,gap", "expected a layer", ","),
    ("(conv3x3-relu", "expected ')' to close the group", None),
    ("conv3x3)", "unexpected ')'", ")"),
    ("dense-w", "option 'w' needs a value", "w"),
    ("leaky_relu(1,2,3)", "leaky_relu: ", "leaky_relu(1,2,3)"),
    ("conv0x3", "filter_shape must be", "conv0x3"),
    ("res(conv3|conv1|dense)", "at most one shortcut", "res(conv3|conv1|dense)"),
    ("myrtle6", "unknown layer 'myrtle6'", "myrtle6"),
    ("", "empty architecture spec", None),
])
def test_errors_point_at_the_token(text, message, token):
    with pytest.raises(ArchitectureSpecError) as info:
        parse_architecture(text)
    msg = str(info.value)
    assert message in msg and isinstance(info.value, ValueError)
    lines = msg.splitlines()
    assert lines[1] == "  " + text
    if token is not None:
        at = text.rindex(token) if token == "," else text.index(token)
        assert lines[2] == "  " + " " * at + "^" * len(token), msg
    if "unknown layer" in message:
        assert "activations: relu, leaky_relu" in msg and "presets: myrtle5" in msg
        assert "did you mean" in msg
