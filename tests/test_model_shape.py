"""ModelShape: validated on construction, and one dict form that round-trips."""
import pytest

from nas.errors import ConfigError
from nas.model import ModelShape


def test_round_trip():
    shape = ModelShape(30, 4, 256, "tokens")
    assert shape.to_dict() == {"vocab_size": 30, "num_classes": 4, "max_len": 256, "readout": "tokens"}
    assert ModelShape.from_dict(shape.to_dict()) == shape


@pytest.mark.parametrize("kwargs, message", [
    ({"vocab_size": 0}, "vocab_size must be an integer >= 1, got 0"),
    ({"num_classes": 2.5}, "num_classes must be an integer >= 1, got 2.5"),
    ({"max_len": True}, "max_len must be an integer >= 1, got True"),
    ({"readout": "head"}, "readout: unknown readout 'head'; allowed: classify, tokens"),
])
def test_bad_values_are_one_line(kwargs, message):
    with pytest.raises(ConfigError, match=f"^{message}$".replace("(", r"\(").replace(")", r"\)")):
        ModelShape(**{"vocab_size": 10, "num_classes": 2, "max_len": 8, **kwargs})


def test_from_dict_names_the_missing_or_unknown_key():
    with pytest.raises(ConfigError, match="ckpt: shape: missing key 'readout'; allowed: vocab_size, "
                                          "num_classes, max_len, readout"):
        ModelShape.from_dict({"vocab_size": 10, "num_classes": 2, "max_len": 8}, source="ckpt: shape")
    with pytest.raises(ConfigError, match="unknown key 'head'"):
        ModelShape.from_dict({"vocab_size": 10, "num_classes": 2, "max_len": 8, "head": "classify"})
