import itertools
import random
from pathlib import Path

import pytest

from nas.errors import ConfigError
from nas.space import Arch, LayerArch, SearchSpace

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


@pytest.fixture
def tiny():
    return SearchSpace.from_yaml(SPACES / "tiny.yaml")


def test_every_shipped_space_loads():
    for path in SPACES.glob("*.yaml"):
        space = SearchSpace.from_yaml(path)
        space.validate(space.largest())
        space.validate(space.smallest())


def test_lra_space_is_lra_sized():
    space = SearchSpace.from_yaml(SPACES / "lra.yaml")
    assert 128 <= space.dim <= 256 and space.max_depth == 6


def test_size_counts_distinct_archs(tiny):
    """Enumerate every arch by brute force and compare with the closed form."""
    per_layer = list(itertools.product(tiny.attention, tiny.heads, tiny.ffn_dims))
    archs = {Arch(d, tuple(LayerArch(*c) for c in combo))
             for d in tiny.depths for combo in itertools.product(per_layer, repeat=d)}
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
    assert Arch(1, (layer, other)) == Arch(1, (layer,))
    # a file is what the user reads: one that lists layers it does not use is refused
    with pytest.raises(ConfigError, match=r"layers must list exactly depth \(1\) layers; got 2 layers"):
        Arch.from_dict({"depth": 1, "layers": [vars(layer), vars(other)]})


@pytest.mark.parametrize("arch, message", [
    (Arch(1, (LayerArch("nope", 2, 32),)), r"layer 0: attention 'nope' is not in space 'tiny'; allowed: full, local"),
    (Arch(1, (LayerArch("full", 3, 32),)), r"layer 0: heads 3 is not in space 'tiny'; allowed: 2, 4"),
    (Arch(3, (LayerArch("full", 2, 32),) * 3), r"depth 3 is not in space 'tiny'; allowed: 1, 2"),
    (Arch(1, (LayerArch("full", 2, 48),)), r"layer 0: ffn_dim 48 is not in space 'tiny'; allowed: 32, 64"),
])
def test_arch_outside_the_space_is_named(tiny, arch, message):
    with pytest.raises(ConfigError, match=message):
        tiny.validate(arch)


def write(tmp_path, text):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


GOOD = "name: s\ndim: 16\nhead_dim: 8\ndepth: [1]\nlayer:\n  attention: {full: {}}\n  heads: [2]\n  ffn_dim: [16]\n"


def test_a_minimal_space_file(tmp_path):
    assert SearchSpace.from_yaml(write(tmp_path, GOOD)).size() == 1


@pytest.mark.parametrize("text, message", [
    (GOOD.replace("full: {}", "fancy: {}"), r"layer.attention.fancy: unknown attention 'fancy'; known: .*full"),
    (GOOD.replace("full: {}", "full: {window: 3}"), r"unknown option 'window' for attention 'full'"),
    (GOOD.replace("dim: 16", "dim: -4"), r"dim must be a positive integer; got -4"),
    (GOOD.replace("depth: [1]", "depth: []"), r"depth needs at least one choice"),
    (GOOD.replace("depth: [1]\n", ""), r"a space has exactly the keys"),
    (GOOD.replace("heads: [2]", "heads: [2"), r"line \d+ malformed YAML"),
])
def test_malformed_space_file_is_one_clear_line(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as err:
        SearchSpace.from_yaml(write(tmp_path, text))
    assert "\n" not in str(err.value)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="nothere.yaml: no such file"):
        SearchSpace.from_yaml(tmp_path / "nothere.yaml")
    with pytest.raises(ConfigError, match="nothere.yaml: no such file"):
        Arch.from_yaml(tmp_path / "nothere.yaml")


def test_malformed_arch_file(tmp_path):
    path = tmp_path / "arch.yaml"
    path.write_text("depth: 1\nlayers:\n  - {attention: full, heads: 2}\n")
    with pytest.raises(ConfigError, match="layer 0 must have exactly the fields attention, heads, ffn_dim"):
        Arch.from_yaml(path)
