"""Malformed search spaces and arch files, generated (Hypothesis) and hand-picked: the loaders
return a valid object or raise one ConfigError line, never a raw Python error."""
import copy
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas.errors import ConfigError
from nas.space import Arch, LayerArch, SearchSpace

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

SPACE = {"name": "s", "dim": 16, "head_dim": 8, "depth": [1, 2],
         "layer": {"attention": {"full": {}, "local": {"window": 4},
                                 "wide": {"type": "local", "window": 8, "global_tokens": 1},
                                 "synthesizer": {"variant": "random", "rank": 2}},
                   "heads": [1, 2], "ffn_dim": [16, 32]},
         "memory": {"reversible": True, "ffn_chunks": 2}}
ARCH = {"depth": 2, "layers": [{"attention": "full", "heads": 2, "ffn_dim": 16},
                               {"attention": "local", "heads": 1, "ffn_dim": 32}]}

# Values a YAML file can hold, biased towards the names and sizes the loaders look at, so that
# a mutation often gets past the first check and exercises the deeper ones.
NAMES = st.sampled_from(["full", "local", "lsh", "type", "window", "variant", "rank", "depth",
                         "layers", "heads", "ffn_dim", "attention", "name", "dim", "layer", "memory",
                         "reversible", "ffn_chunks", ""])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2, 64), st.integers(),
                    st.floats(), st.text(max_size=6), NAMES)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.one_of(NAMES, st.integers(0, 3), st.none()), inner, max_size=3)),
    max_leaves=8)


def places(data, parent=None, key=None):
    """(container, key) of every value in nested dicts and lists, the root as (None, None)."""
    yield parent, key
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for k, v in list(items):
        yield from places(v, data, k)


@st.composite
def mutated(draw, base):
    """`base` with one to three values replaced, deleted or added."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        parent, key = draw(st.sampled_from(list(places(data))))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if parent is None:
            data = draw(VALUES) if action == "replace" else data
        elif action == "replace":
            parent[key] = draw(VALUES)
        elif action == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(st.one_of(NAMES, st.text(max_size=4)))] = draw(VALUES)
        else:
            parent.append(draw(VALUES))
    return data


def load_or_error(load, data):
    """load(data), or None after checking that the only error is a one-line ConfigError."""
    try:
        return load(data)
    except ConfigError as err:
        assert "\n" not in str(err) and str(err), repr(str(err))
        return None


@FUZZ
@given(mutated(SPACE))
def test_mutated_space_loads_or_is_one_line(data):
    space = load_or_error(SearchSpace.from_dict, data)
    if space is not None:  # what loads is a usable space that survives its own round trip
        assert SearchSpace.from_dict(space.to_dict()) == space
        assert all(isinstance(v, int) and v >= 1 for v in space.depths + space.heads + space.ffn_dims)
        space.validate(space.sample(0))
        space.validate(space.largest())


@FUZZ
@given(mutated(ARCH))
def test_mutated_arch_loads_or_is_one_line(data):
    arch = load_or_error(Arch.from_dict, data)
    if arch is not None:
        assert Arch.from_dict(arch.to_dict()) == arch
        assert len(arch.layers) == arch.depth >= 1
        assert yaml.safe_load(arch.to_yaml()) == arch.to_dict()


@FUZZ
@given(st.one_of(mutated(SPACE), mutated(ARCH)))
def test_mutated_files_through_yaml_text(data):
    """The same mutations as files, so that the YAML reader is on the path."""
    text = yaml.safe_dump(data, allow_unicode=True)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "file.yaml"
        path.write_text(text, encoding="utf-8")
        load_or_error(SearchSpace.from_yaml, path)
        load_or_error(Arch.from_yaml, path)


def good_text() -> str:
    return yaml.safe_dump(SPACE, sort_keys=False)


@st.composite
def corrupted_bytes(draw, text: str):
    """`text` as UTF-8 with a few bytes inserted, deleted or replaced, or arbitrary bytes."""
    data = bytearray(text.encode())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        junk = draw(st.binary(min_size=0, max_size=4) | st.sampled_from(
            [b"\t", b":", b"- ", b"{", b"[", b"&a ", b"*a", b"!!python/name:os.system ", b"\xff"]))
        data[at:at + draw(st.integers(0, 3))] = junk
    return bytes(data)


@FUZZ
@given(st.one_of(corrupted_bytes(good_text()), corrupted_bytes(yaml.safe_dump(ARCH)),
                 st.binary(max_size=64)))
def test_corrupted_yaml_bytes_load_or_are_one_line(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "file.yaml"
        path.write_bytes(data)
        load_or_error(SearchSpace.from_yaml, path)
        load_or_error(Arch.from_yaml, path)


@FUZZ
@given(VALUES, VALUES, VALUES, VALUES)
def test_python_api_arch_of_any_values(attention, heads, ffn_dim, depth):
    """Arch and LayerArch built directly (strategies, retrain) check their fields too."""
    layer = load_or_error(lambda _: LayerArch(attention, heads, ffn_dim), None)
    if layer is not None:
        assert isinstance(layer.heads, int) and isinstance(layer.ffn_dim, int)
        load_or_error(lambda _: Arch(depth, (layer,)), None)


# -- hand-picked inputs and the exact line each gives --------------------------------------

def write(folder: Path, text: str) -> Path:
    path = folder / "file.yaml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD_ARCH = "depth: 1\nlayers:\n  - {attention: full, heads: 2, ffn_dim: 16}\n"
GOOD_SPACE = ("name: s\ndim: 16\nhead_dim: 8\ndepth: [1]\nlayer:\n"
              "  attention: {full: {}}\n  heads: [2]\n  ffn_dim: [16]\n")


@pytest.mark.parametrize("text, message", [
    ("", "an arch has exactly the keys depth, layers; got NoneType"),
    ("- full\n", "an arch has exactly the keys depth, layers; got list"),
    ("depth: [1\n", "line 2 malformed YAML: expected ',' or ']', but got '<stream end>'"),
    (GOOD_ARCH.replace("depth: 1", 'depth: "one"'), "depth must be a positive integer; got 'one'"),
    (GOOD_ARCH.replace("depth: 1", "depth: 1.0"), "depth must be a positive integer; got 1.0"),
    (GOOD_ARCH.replace("depth: 1", "depth: true"), "depth must be a positive integer; got True"),
    (GOOD_ARCH.replace("depth: 1", "depth: 0"), "depth must be a positive integer; got 0"),
    (GOOD_ARCH.replace("depth: 1", "depth: 2"), "layers must list exactly depth (2) layers; got 1 layers"),
    (GOOD_ARCH.replace("depth: 1\n", ""), "an arch has exactly the keys depth, layers; got ['layers']"),
    (GOOD_ARCH + "extra: 1\n",
     "an arch has exactly the keys depth, layers; got ['depth', 'extra', 'layers']"),
    (GOOD_ARCH + "depth: 2\n", "line 4 malformed YAML: duplicate key 'depth'"),
    (GOOD_ARCH.replace("heads: 2", 'heads: "four"'), "layer 0: heads must be a positive integer; got 'four'"),
    (GOOD_ARCH.replace("heads: 2", "heads: yes"), "layer 0: heads must be a positive integer; got True"),
    (GOOD_ARCH.replace("ffn_dim: 16", "ffn_dim: -16"),
     "layer 0: ffn_dim must be a positive integer; got -16"),
    (GOOD_ARCH.replace("attention: full", "attention: 3"),
     "layer 0: attention must be a candidate name (a string); got 3"),
    (GOOD_ARCH.replace("ffn_dim: 16", "ffn_dim: 16, dropout: 0.1"),
     "layer 0 must have exactly the fields attention, heads, ffn_dim; "
     "got {'attention': 'full', 'heads': 2, 'ffn_dim': 16, 'dropout': 0.1}"),
    ("depth: 1\nlayers: full\n", "layers must list exactly depth (1) layers; got 'full'"),
])
def test_bad_arch_file_names_the_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        Arch.from_yaml(path)
    assert str(err.value) == f"{path}: {message}"


@pytest.mark.parametrize("text, message", [
    ("", "a space has exactly the keys depth, dim, head_dim, layer, name (and optionally memory); got NoneType"),
    (GOOD_SPACE + "memory: [reversible]\n",
     "memory maps reversible, ffn_chunks to values, e.g. {reversible: true, ffn_chunks: 4}; got ['reversible']"),
    (GOOD_SPACE + "memory: {chunks: 4}\n", "memory: unknown key 'chunks'; allowed: reversible, ffn_chunks"),
    (GOOD_SPACE + "memory: {reversible: 1}\n", "memory.reversible must be true or false; got 1"),
    (GOOD_SPACE + "memory: {ffn_chunks: 0}\n", "memory.ffn_chunks must be a positive integer; got 0"),
    (GOOD_SPACE.replace("name: s", "name: [s]"), "name must be a non-empty string on one line; got ['s']"),
    (GOOD_SPACE.replace("dim: 16", "dim: 16.0"), "dim must be a positive integer; got 16.0"),
    (GOOD_SPACE.replace("head_dim: 8", "head_dim: eight"), "head_dim must be a positive integer; got 'eight'"),
    (GOOD_SPACE.replace("depth: [1]", "depth: [1, 2, 1]"),
     "depth lists 1 more than once; choices must be distinct"),
    (GOOD_SPACE.replace("depth: [1]", "depth: [1, 1000000000000]"),
     "depth 1000000000000 is more layers than a space may have (at most 1024)"),
    (GOOD_SPACE.replace("heads: [2]", "heads: []"), "layer.heads needs at least one choice"),
    (GOOD_SPACE.replace("ffn_dim: [16]", "ffn_dim: [0]"), "layer.ffn_dim must be a positive integer; got 0"),
    (GOOD_SPACE.replace("ffn_dim: [16]", "ffn: [16]"),
     "'layer' has exactly the keys attention, heads, ffn_dim; got ['attention', 'ffn', 'heads']"),
    (GOOD_SPACE.replace("{full: {}}", "{full: {}, full: {}}"), "line 6 malformed YAML: duplicate key 'full'"),
    (GOOD_SPACE.replace("{full: {}}", "{full: {}, dense: {type: full}}"),
     "layer.attention.dense repeats candidate 'full' (same type and options)"),
    (GOOD_SPACE.replace("{full: {}}", "[full, local]"),
     "layer.attention maps candidate names to options, e.g. 'local: {window: 64}'"),
    (GOOD_SPACE.replace("{full: {}}", "{full: [1]}"),
     "layer.attention.full: options must be a mapping of option names to values, e.g. {window: 64}; got [1]"),
    (GOOD_SPACE.replace("{full: {}}", "{1: {type: full}}"),
     "layer.attention: candidate names are letters, digits, _ and -; got 1"),
    (GOOD_SPACE.replace("{full: {}}", '{"a b": {type: full}}'),
     "layer.attention: candidate names are letters, digits, _ and -; got 'a b'"),
    (GOOD_SPACE.replace("name: s", 'name: "two\\nlines"'),
     "name must be a non-empty string on one line; got 'two\\nlines'"),
    (GOOD_SPACE.replace("{full: {}}", "{f: {type: [full]}}"),
     "layer.attention.f: unknown attention ['full']; known: block_recurrent, full, linformer, local, lsh, performer, synthesizer"),
    (GOOD_SPACE.replace("{full: {}}", "{local: {window: wide}}"),
     "layer.attention.local: attention 'local': option 'window' must be an integer; got 'wide'"),
    (GOOD_SPACE.replace("{full: {}}", "{local: {window: 1}}"),
     "layer.attention.local: attention 'local': window must be >= 2, got 1"),
    (GOOD_SPACE.replace("{full: {}}", "{lsh: {n_buckets: 2.5}}"),
     "layer.attention.lsh: attention 'lsh': option 'n_buckets' must be an integer or null; got 2.5"),
    (GOOD_SPACE.replace("{full: {}}", "{synthesizer: {variant: [dense]}}"),
     "layer.attention.synthesizer: attention 'synthesizer': option 'variant' must be a string; got ['dense']"),
    (GOOD_SPACE.replace("{full: {}}", "{full: {window: 3}}"),
     "layer.attention.full: unknown option 'window' for attention 'full'; allowed: (none)"),
])
def test_bad_space_file_names_the_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        SearchSpace.from_yaml(path)
    assert str(err.value) == f"{path}: {message}"


def test_a_folder_is_not_a_file(tmp_path):
    with pytest.raises(ConfigError) as err:
        SearchSpace.from_yaml(tmp_path)
    assert str(err.value) == f"{tmp_path}: not a file"


def test_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "file.yaml"
    path.write_bytes(GOOD_ARCH.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError) as err:
        Arch.from_yaml(path)
    at = len(GOOD_ARCH.encode()) + len("# caf")
    assert str(err.value) == f"{path}: not UTF-8 text (invalid continuation byte at byte {at})"


def test_integers_of_other_types_become_plain_ints():
    """A strategy may pick sizes as numpy integers; the arch stores plain ints (YAML-safe)."""
    np = pytest.importorskip("numpy")
    arch = Arch(np.int64(1), (LayerArch("full", np.int64(2), np.int32(16)),))
    assert arch == Arch(1, (LayerArch("full", 2, 16),))
    assert {type(v) for v in (arch.depth, arch.layers[0].heads, arch.layers[0].ffn_dim)} == {int}
    assert yaml.safe_load(arch.to_yaml())["layers"][0]["heads"] == 2


def test_yaml_anchors_and_merge_keys_still_load(tmp_path):
    """The repeated-key check leaves YAML's own reuse alone: a key beside `<<` overrides."""
    path = write(tmp_path, GOOD_SPACE.replace(
        "{full: {}}", "\n    local: &narrow {window: 4, global_tokens: 1}\n"
                      "    wide: {<<: *narrow, window: 8, type: local}"))
    space = SearchSpace.from_yaml(path)
    assert space.attention["wide"].options == {"window": 8, "global_tokens": 1}
    assert space.attention["local"].options == {"window": 4, "global_tokens": 1}


@pytest.mark.parametrize("make, message", [
    (lambda: Arch(1, None), "arch layers must be a sequence of LayerArch; got None"),
    (lambda: Arch(1, [{"attention": "full"}]),
     "arch layers must be a sequence of LayerArch; got [{'attention': 'full'}]"),
    (lambda: Arch("1", (LayerArch("full", 2, 16),)), "depth must be a positive integer; got '1'"),
    (lambda: LayerArch("full", 2.0, 16), "heads must be a positive integer; got 2.0"),
    (lambda: LayerArch(None, 2, 16), "attention must be a candidate name (a string); got None"),
])
def test_python_api_names_the_field(make, message):
    with pytest.raises(ConfigError) as err:
        make()
    assert str(err.value) == message
