"""SearchSpace and Arch: the shipped spaces, size, sampling, YAML round trips, and every
hand-picked bad input with the exact line it gives (generated inputs: test_space_fuzz.py)."""

import itertools
import random
from pathlib import Path

import pytest
import yaml

from nas.errors import ConfigError
from nas.space import Arch, LayerArch, SearchSpace
from tests.helpers import SPACES, load_space


@pytest.fixture
def tiny():
    return load_space("tiny")


def test_every_shipped_space_loads():
    for path in SPACES.glob("*.yaml"):
        space = SearchSpace.from_yaml(path)
        space.validate(space.largest())
        space.validate(space.smallest())


def test_lra_space_is_lra_sized():
    space = load_space("lra")
    assert 128 <= space.dim <= 256 and space.max_depth == 6


def test_size_counts_distinct_archs(tiny):
    """Enumerate every arch by brute force and compare with the closed form."""
    per_layer = list(itertools.product(tiny.attention, tiny.heads, tiny.ffn_dims))
    archs = {
        Arch(d, tuple(LayerArch(*c) for c in combo))
        for d in tiny.depths
        for combo in itertools.product(per_layer, repeat=d)
    }
    assert len(archs) == tiny.size() == 6 * 2 * 2 + (6 * 2 * 2) ** 2


def test_sample_is_seeded_and_in_the_space(tiny):
    assert tiny.sample(7) == tiny.sample(7)
    samples = {tiny.sample(seed) for seed in range(30)}
    assert len(samples) > 20
    rng = random.Random(1)
    for arch in samples | {tiny.sample(rng)}:
        tiny.validate(arch)


def test_largest_and_smallest(tiny):
    assert tiny.largest().depth == 2 and {l.heads for l in tiny.largest().layers} == {4}
    assert tiny.smallest().depth == 1 and tiny.smallest().layers[0].ffn_dim == 32


def test_arch_yaml_round_trip_and_hash(tiny, tmp_path):
    arch = tiny.sample(3)
    arch.to_yaml(tmp_path / "a.yaml")
    again = Arch.from_yaml(tmp_path / "a.yaml")
    assert again == arch and hash(again) == hash(arch)
    assert tiny.arch_from_choices(tiny.choices_of(arch)) == arch


def test_layers_past_depth_are_not_part_of_the_arch():
    layer = LayerArch("full", 2, 32)
    other = LayerArch("local", 4, 64)
    assert Arch(1, (layer, other)) == Arch(1, (layer,))  # a file listing them is refused (below)


@pytest.mark.parametrize(
    "arch, message",
    [
        (
            Arch(1, (LayerArch("nope", 2, 32),)),
            r"layer 0: attention 'nope' is not in space 'tiny'; allowed: full, local",
        ),
        (Arch(1, (LayerArch("full", 3, 32),)), r"layer 0: heads 3 is not in space 'tiny'; allowed: 2, 4"),
        (Arch(3, (LayerArch("full", 2, 32),) * 3), r"depth 3 is not in space 'tiny'; allowed: 1, 2"),
        (Arch(1, (LayerArch("full", 2, 48),)), r"layer 0: ffn_dim 48 is not in space 'tiny'; allowed: 32, 64"),
    ],
)
def test_arch_outside_the_space_is_named(tiny, arch, message):
    with pytest.raises(ConfigError, match=message):
        tiny.validate(arch)


# -- bad input, hand-picked, and the exact line each gives ------------------------------------


def write(folder: Path, text: str) -> Path:
    path = folder / "file.yaml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD_ARCH = "depth: 1\nlayers:\n  - {attention: full, heads: 2, ffn_dim: 16}\n"
GOOD_SPACE = (
    "name: s\ndim: 16\nhead_dim: 8\ndepth: [1]\nlayer:\n  attention: {full: {}}\n  heads: [2]\n  ffn_dim: [16]\n"
)
KNOWN = "block_recurrent, full, gated_deltanet, gla, hyena, linformer, local, lsh, mamba2, performer, synthesizer"  # registered ops


def test_a_minimal_space_file(tmp_path):
    assert SearchSpace.from_yaml(write(tmp_path, GOOD_SPACE)).size() == 1


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "an arch has exactly the keys depth, layers; got NoneType"),
        ("- full\n", "an arch has exactly the keys depth, layers; got list"),
        ("depth: [1\n", "line 2 malformed YAML: expected ',' or ']', but got '<stream end>'"),
        (GOOD_ARCH.replace("depth: 1", 'depth: "one"'), "depth must be a positive integer; got 'one'"),
        (GOOD_ARCH.replace("depth: 1", "depth: 1.0"), "depth must be a positive integer; got 1.0"),
        (GOOD_ARCH.replace("depth: 1", "depth: true"), "depth must be a positive integer; got True"),
        (GOOD_ARCH.replace("depth: 1", "depth: 0"), "depth must be a positive integer; got 0"),
        (GOOD_ARCH.replace("depth: 1", "depth: 2"), "layers must list exactly depth (2) layers; got 1 layers"),
        # Arch(1, (a, b)) drops b, but a file is what the user reads: one listing unused layers is refused
        (
            GOOD_ARCH + "  - {attention: local, heads: 2, ffn_dim: 16}\n",
            "layers must list exactly depth (1) layers; got 2 layers",
        ),
        (GOOD_ARCH.replace("depth: 1\n", ""), "an arch has exactly the keys depth, layers; got ['layers']"),
        (GOOD_ARCH + "extra: 1\n", "an arch has exactly the keys depth, layers; got ['depth', 'extra', 'layers']"),
        (GOOD_ARCH + "depth: 2\n", "line 4 malformed YAML: duplicate key 'depth'"),
        (GOOD_ARCH.replace("heads: 2", 'heads: "four"'), "layer 0: heads must be a positive integer; got 'four'"),
        (GOOD_ARCH.replace("heads: 2", "heads: yes"), "layer 0: heads must be a positive integer; got True"),
        (GOOD_ARCH.replace("ffn_dim: 16", "ffn_dim: -16"), "layer 0: ffn_dim must be a positive integer; got -16"),
        (
            GOOD_ARCH.replace("attention: full", "attention: 3"),
            "layer 0: attention must be a candidate name (a string); got 3",
        ),
        (
            GOOD_ARCH.replace("ffn_dim: 16", "ffn_dim: 16, dropout: 0.1"),
            "layer 0 must have exactly the fields attention, heads, ffn_dim; "
            "got ['attention', 'dropout', 'ffn_dim', 'heads']",
        ),
        (
            GOOD_ARCH.replace(", ffn_dim: 16", ""),
            "layer 0 must have exactly the fields attention, heads, ffn_dim; got ['attention', 'heads']",
        ),
        ("depth: 1\nlayers: full\n", "layers must list exactly depth (1) layers; got 'full'"),
    ],
)
def test_bad_arch_file_names_the_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        Arch.from_yaml(path)
    assert str(err.value) == f"{path}: {message}"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "a space has exactly the keys depth, dim, head_dim, layer, name (and optionally memory); got NoneType"),
        (
            GOOD_SPACE.replace("depth: [1]\n", ""),
            "a space has exactly the keys depth, dim, head_dim, layer, name (and optionally memory); "
            "got ['dim', 'head_dim', 'layer', 'name']",
        ),
        (
            GOOD_SPACE + "memory: [reversible]\n",
            "memory maps reversible, ffn_chunks to values, e.g. {reversible: true, ffn_chunks: 4}; got ['reversible']",
        ),
        (GOOD_SPACE + "memory: {chunks: 4}\n", "memory: unknown key 'chunks'; allowed: reversible, ffn_chunks"),
        (GOOD_SPACE + "memory: {reversible: 1}\n", "memory.reversible must be true or false; got 1"),
        (GOOD_SPACE + "memory: {ffn_chunks: 0}\n", "memory.ffn_chunks must be a positive integer; got 0"),
        (GOOD_SPACE.replace("name: s", "name: [s]"), "name must be a non-empty string on one line; got ['s']"),
        (GOOD_SPACE.replace("dim: 16", "dim: 16.0"), "dim must be a positive integer; got 16.0"),
        (GOOD_SPACE.replace("head_dim: 8", "head_dim: eight"), "head_dim must be a positive integer; got 'eight'"),
        (
            GOOD_SPACE.replace("depth: [1]", "depth: [1, 2, 1]"),
            "depth lists 1 more than once; choices must be distinct",
        ),
        (
            GOOD_SPACE.replace("depth: [1]", "depth: [1, 1000000000000]"),
            "depth 1000000000000 is more layers than a space may have (at most 1024)",
        ),
        (GOOD_SPACE.replace("heads: [2]", "heads: []"), "layer.heads needs at least one choice"),
        (GOOD_SPACE.replace("ffn_dim: [16]", "ffn_dim: [0]"), "layer.ffn_dim must be a positive integer; got 0"),
        (
            GOOD_SPACE.replace("ffn_dim: [16]", "ffn: [16]"),
            "'layer' has exactly the keys attention, heads, ffn_dim; got ['attention', 'ffn', 'heads']",
        ),
        (GOOD_SPACE.replace("{full: {}}", "{full: {}, full: {}}"), "line 6 malformed YAML: duplicate key 'full'"),
        (
            GOOD_SPACE.replace("{full: {}}", "{full: {}, dense: {type: full}}"),
            "layer.attention.dense repeats candidate 'full' (same type and options)",
        ),
        (
            GOOD_SPACE.replace("{full: {}}", "[full, local]"),
            "layer.attention maps candidate names to options, e.g. 'local: {window: 64}'",
        ),
        (
            GOOD_SPACE.replace("{full: {}}", "{full: [1]}"),
            "layer.attention.full: options must be a mapping of option names to values, e.g. {window: 64}; got [1]",
        ),
        (
            GOOD_SPACE.replace("{full: {}}", "{1: {type: full}}"),
            "layer.attention: candidate names are letters, digits, _ and -; got 1",
        ),
        (
            GOOD_SPACE.replace("{full: {}}", '{"a b": {type: full}}'),
            "layer.attention: candidate names are letters, digits, _ and -; got 'a b'",
        ),
        (
            GOOD_SPACE.replace("name: s", 'name: "two\\nlines"'),
            "name must be a non-empty string on one line; got 'two\\nlines'",
        ),
        (
            GOOD_SPACE.replace("{full: {}}", "{fancy: {}}"),
            f"layer.attention.fancy: unknown attention 'fancy'; known: {KNOWN}",
        ),
        (
            GOOD_SPACE.replace("{full: {}}", "{f: {type: [full]}}"),
            f"layer.attention.f: unknown attention ['full']; known: {KNOWN}",
        ),
        (
            GOOD_SPACE.replace("{full: {}}", "{local: {window: wide}}"),
            "layer.attention.local: attention 'local': option 'window' must be an integer; got 'wide'",
        ),
        (
            GOOD_SPACE.replace("{full: {}}", "{local: {window: 1}}"),
            "layer.attention.local: attention 'local': window must be >= 2, got 1",
        ),
        (
            GOOD_SPACE.replace("{full: {}}", "{lsh: {n_buckets: 2.5}}"),
            "layer.attention.lsh: attention 'lsh': option 'n_buckets' must be an integer or null; got 2.5",
        ),
        (
            GOOD_SPACE.replace("{full: {}}", "{synthesizer: {variant: [dense]}}"),
            "layer.attention.synthesizer: attention 'synthesizer': option 'variant' must be a string; got ['dense']",
        ),
        (
            GOOD_SPACE.replace("{full: {}}", "{full: {window: 3}}"),
            "layer.attention.full: unknown option 'window' for attention 'full'; allowed: (none)",
        ),
    ],
)
def test_bad_space_file_names_the_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        SearchSpace.from_yaml(path)
    assert str(err.value) == f"{path}: {message}"


def test_a_path_that_is_not_a_file_is_named(tmp_path):
    for load in (SearchSpace.from_yaml, Arch.from_yaml):
        with pytest.raises(ConfigError) as err:
            load(tmp_path / "nothere.yaml")
        assert str(err.value) == f"{tmp_path / 'nothere.yaml'}: no such file"
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
    path = write(
        tmp_path,
        GOOD_SPACE.replace(
            "{full: {}}",
            "\n    local: &narrow {window: 4, global_tokens: 1}\n    wide: {<<: *narrow, window: 8, type: local}",
        ),
    )
    space = SearchSpace.from_yaml(path)
    assert space.attention["wide"].options == {"window": 8, "global_tokens": 1}
    assert space.attention["local"].options == {"window": 4, "global_tokens": 1}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Arch(1, None), "arch layers must be a sequence of LayerArch; got None"),
        (
            lambda: Arch(1, [{"attention": "full"}]),
            "arch layers must be a sequence of LayerArch; got [{'attention': 'full'}]",
        ),
        (lambda: Arch("1", (LayerArch("full", 2, 16),)), "depth must be a positive integer; got '1'"),
        (lambda: LayerArch("full", 2.0, 16), "heads must be a positive integer; got 2.0"),
        (lambda: LayerArch(None, 2, 16), "attention must be a candidate name (a string); got None"),
    ],
)
def test_python_api_names_the_field(make, message):
    with pytest.raises(ConfigError) as err:
        make()
    assert str(err.value) == message
