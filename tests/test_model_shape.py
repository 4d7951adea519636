"""ModelShape and ModelSpec: validated on construction, and one dict form that round-trips."""

import pytest

from nas.errors import ConfigError
from nas.model import ModelShape, ModelSpec
from nas.space import Arch, LayerArch, SearchSpace

SPACE = {
    "name": "s",
    "dim": 16,
    "head_dim": 8,
    "depth": [1, 2],
    "layer": {"attention": {"full": {}}, "heads": [1, 2], "ffn_dim": [16, 32]},
}


def test_round_trip():
    shape = ModelShape(30, 4, 256, "tokens")
    assert shape.to_dict() == {
        "vocab_size": 30,
        "num_classes": 4,
        "max_len": 256,
        "readout": "tokens",
        "causal": False,
        "input": "ids",
        "channels": 1,
        "patch_len": 16,
        "patch_stride": 8,
    }
    assert ModelShape.from_dict(shape.to_dict()) == shape


def test_a_shape_saved_before_causal_existed_is_bidirectional():
    saved = {"vocab_size": 30, "num_classes": 4, "max_len": 256, "readout": "tokens"}
    assert ModelShape.from_dict(saved) == ModelShape(30, 4, 256, "tokens", causal=False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"vocab_size": 0}, "vocab_size must be an integer >= 1, got 0"),
        ({"num_classes": 2.5}, "num_classes must be an integer >= 1, got 2.5"),
        ({"max_len": True}, "max_len must be an integer >= 1, got True"),
        ({"readout": "head"}, "readout: unknown readout 'head'; allowed: classify, tokens, pair, forecast"),
        ({"causal": "yes"}, "causal must be true or false, got 'yes'"),
    ],
)
def test_bad_values_are_one_line(kwargs, message):
    with pytest.raises(ConfigError, match=f"^{message}$".replace("(", r"\(").replace(")", r"\)")):
        ModelShape(**{"vocab_size": 10, "num_classes": 2, "max_len": 8, **kwargs})


def test_from_dict_names_the_missing_or_unknown_key():
    with pytest.raises(
        ConfigError,
        match="ckpt: shape: missing key 'max_len'; allowed: vocab_size, num_classes, max_len, readout, causal",
    ):
        ModelShape.from_dict({"vocab_size": 10, "num_classes": 2, "readout": "tokens"}, source="ckpt: shape")
    with pytest.raises(ConfigError, match="unknown key 'head'"):
        ModelShape.from_dict({"vocab_size": 10, "num_classes": 2, "max_len": 8, "head": "classify"})


def test_spec_round_trip_is_one_dict_of_its_parts():
    space = SearchSpace.from_dict(SPACE)
    spec = ModelSpec(space.largest(), space, ModelShape(30, 4, 64))
    assert spec.to_dict() == {
        "arch": space.largest().to_dict(),
        "space": space.to_dict(),
        "shape": ModelShape(30, 4, 64).to_dict(),
    }
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert hash(ModelSpec.from_dict(spec.to_dict())) == hash(spec)  # frozen: usable as a key


def test_spec_refuses_an_arch_outside_its_space_in_one_line_naming_the_source():
    space = SearchSpace.from_dict(SPACE)
    wide = Arch(1, (LayerArch("full", 2, 64),))
    with pytest.raises(ConfigError, match="ffn_dim 64 is not in space 's'"):
        ModelSpec(wide, space, ModelShape(30, 4, 64))
    data = {**ModelSpec(space.largest(), space, ModelShape(30, 4, 64)).to_dict(), "arch": wide.to_dict()}
    with pytest.raises(ConfigError, match="^ckpt: .*ffn_dim 64 is not in space 's'") as err:
        ModelSpec.from_dict(data, source="ckpt")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"shape": None}, "ckpt: missing key 'shape'; allowed: arch, space, shape"),
        ({"extra": 1}, "ckpt: unknown key 'extra'; allowed: arch, space, shape"),
        ({"shape": {"vocab_size": 30}}, "ckpt: shape: missing key 'num_classes'"),
    ],
)
def test_spec_from_dict_names_the_source_and_the_part(change, message):
    space = SearchSpace.from_dict(SPACE)
    data = {**ModelSpec(space.largest(), space, ModelShape(30, 4, 64)).to_dict(), **change}
    data = {key: value for key, value in data.items() if value is not None}
    with pytest.raises(ConfigError, match=message):
        ModelSpec.from_dict(data, source="ckpt")
    with pytest.raises(ConfigError, match="ckpt: expected a mapping of arch, space, shape, got list"):
        ModelSpec.from_dict([], source="ckpt")


def test_spec_from_hparams_reads_the_model_or_the_separate_parts_of_older_checkpoints():
    space = SearchSpace.from_dict(SPACE)
    spec = ModelSpec(space.smallest(), space, ModelShape(30, 4, 64))
    assert ModelSpec.from_hparams({"model": spec.to_dict(), "metric": "acc"}, "ckpt") == spec
    assert ModelSpec.from_hparams({**spec.to_dict(), "metric": "acc"}, "ckpt") == spec
    with pytest.raises(ConfigError, match="ckpt: model: expected a mapping"):
        ModelSpec.from_hparams({"arch": spec.arch.to_dict(), "metric": "acc"}, "ckpt")
