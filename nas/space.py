"""The search space (what a layer may be, how deep a model may be) and `Arch`, one point in it.

A space is declared in YAML (see search_spaces/). Every decision of the space has a key
(`depth`, `layer3.heads`, ...) and a tuple of choices: strategies search over `decisions()`
and turn their picks back into an `Arch` with `arch_from_choices()`.
"""

from __future__ import annotations

import dataclasses
import numbers
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nas.atomic import atomic_write
from nas.errors import ConfigError, excerpt
from nas.safe_load import read_yaml

LAYER_FIELDS = ("attention", "heads", "ffn_dim")
# A bound on a space's depth choices: an arch and the supernet hold one object per layer, so a
# typo like `depth: [1, 20000000]` would fill memory before any error could be given.
MAX_DEPTH = 1024


@dataclass(frozen=True)
class LayerArch:
    attention: str  # a candidate name from the space's `layer.attention` section
    heads: int  # active heads, each `head_dim` wide
    ffn_dim: int  # active hidden units of the feed-forward block

    def __post_init__(self):
        if not isinstance(self.attention, str) or not self.attention:
            raise ConfigError(f"attention must be a candidate name (a string); got {excerpt(self.attention)}")
        # numpy / torch integers from a strategy become plain ints, so YAML and hashes agree
        object.__setattr__(self, "heads", _positive_int(self.heads, "heads"))
        object.__setattr__(self, "ffn_dim", _positive_int(self.ffn_dim, "ffn_dim"))


@dataclass(frozen=True)
class Arch:
    """One architecture: `depth` layers. Layers past `depth` are dropped: not part of the arch."""

    depth: int
    layers: tuple[LayerArch, ...]

    def __post_init__(self):
        object.__setattr__(self, "depth", _positive_int(self.depth, "depth"))
        if not isinstance(self.layers, (tuple, list)) or not all(isinstance(layer, LayerArch) for layer in self.layers):
            raise ConfigError(f"arch layers must be a sequence of LayerArch; got {excerpt(self.layers)}")
        if len(self.layers) < self.depth:
            raise ConfigError(f"arch has depth {self.depth} but only {len(self.layers)} layers")
        object.__setattr__(self, "layers", tuple(self.layers[: self.depth]))

    def to_dict(self) -> dict:
        return {"depth": self.depth, "layers": [dataclasses.asdict(layer) for layer in self.layers]}

    @classmethod
    def from_dict(cls, data: Any, source: str = "arch") -> Arch:
        """The arch of a mapping as `to_dict` writes it: exactly `depth` and `depth` layers."""
        if not isinstance(data, dict) or set(data) != {"depth", "layers"}:
            got = excerpt(sorted(map(str, data))) if isinstance(data, dict) else type(data).__name__
            raise ConfigError(f"{source}: an arch has exactly the keys depth, layers; got {got}")
        depth = _positive_int(data["depth"], "depth", source)
        if not isinstance(data["layers"], list) or len(data["layers"]) != depth:
            got = f"{len(data['layers'])} layers" if isinstance(data["layers"], list) else excerpt(data["layers"])
            raise ConfigError(f"{source}: layers must list exactly depth ({depth}) layers; got {got}")
        layers = []
        for i, layer in enumerate(data["layers"]):
            if not isinstance(layer, dict) or set(layer) != set(LAYER_FIELDS):
                got = excerpt(sorted(map(str, layer))) if isinstance(layer, dict) else type(layer).__name__
                raise ConfigError(
                    f"{source}: layer {i} must have exactly the fields {', '.join(LAYER_FIELDS)}; got {got}"
                )
            try:
                layers.append(LayerArch(**layer))
            except ConfigError as err:
                raise ConfigError(f"{source}: layer {i}: {err}") from None
        return cls(depth=depth, layers=tuple(layers))

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            atomic_write(path, text)
        return text

    @classmethod
    def from_yaml(cls, path: str | Path) -> Arch:
        return cls.from_dict(read_yaml(path), source=str(path))

    def describe(self) -> str:
        """One line per layer, for logs and summaries."""
        return "\n".join(
            f"layer {i}: {l.attention:<12} heads={l.heads:<3} ffn={l.ffn_dim}" for i, l in enumerate(self.layers)
        )


@dataclass(frozen=True)
class AttentionChoice:
    type: str  # a registered attention op
    options: dict  # that op's options (window, k, features, ...)

    def __hash__(self):
        return hash((self.type, tuple(sorted(self.options.items()))))


@dataclass(frozen=True)
class MemoryOptions:
    """How every model of a space trades compute for training memory (Reformer,
    https://arxiv.org/abs/2001.04451); the function each arch computes does not depend on
    ffn_chunks, and `reversible` is a different (RevNet-coupled) model."""

    reversible: bool = False  # reversible residual layers: activations recomputed in backward
    ffn_chunks: int = 1  # the feed-forward runs on this many pieces of the sequence

    @classmethod
    def from_dict(cls, data: Any, source: str) -> MemoryOptions:
        names = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(data, dict):
            raise ConfigError(
                f"{source}: memory maps {', '.join(names)} to values, e.g. "
                f"{{reversible: true, ffn_chunks: 4}}; got {excerpt(data)}"
            )
        unknown = [key for key in data if key not in names]
        if unknown:
            raise ConfigError(f"{source}: memory: unknown key {excerpt(unknown[0])}; allowed: {', '.join(names)}")
        reversible = data.get("reversible", False)
        if not isinstance(reversible, bool):
            raise ConfigError(f"{source}: memory.reversible must be true or false; got {excerpt(reversible)}")
        return cls(reversible, _positive_int(data.get("ffn_chunks", 1), "memory.ffn_chunks", source))


@dataclass(frozen=True, eq=False)
class SearchSpace:
    name: str
    dim: int  # model width, fixed for every arch
    head_dim: int  # width of one attention head
    depths: tuple[int, ...]  # allowed depths; the supernet holds max(depths) layers
    attention: dict[str, AttentionChoice]  # candidate name -> op type and options
    heads: tuple[int, ...]
    ffn_dims: tuple[int, ...]
    memory: MemoryOptions = MemoryOptions()  # the `memory` section; the same for every arch

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    @property
    def max_heads(self) -> int:
        return max(self.heads)

    @property
    def max_ffn_dim(self) -> int:
        return max(self.ffn_dims)

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path, memory: Any = None) -> SearchSpace:
        """The space of a YAML file; `memory`, when given, replaces the file's memory section
        (`nas-search space.memory={reversible:true}`)."""
        data = read_yaml(path)
        if memory is not None and isinstance(data, dict):
            data = {**data, "memory": memory}
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "space") -> SearchSpace:
        from nas.ops.attention import ATTENTION  # late: the ops import nothing from here

        expected = {"name", "dim", "head_dim", "depth", "layer"}
        if not isinstance(data, dict) or set(data) - {"memory"} != expected:
            got = excerpt(sorted(map(str, data))) if isinstance(data, dict) else type(data).__name__
            raise ConfigError(
                f"{source}: a space has exactly the keys {', '.join(sorted(expected))} "
                f"(and optionally memory); got {got}"
            )
        if not isinstance(data["name"], str) or not data["name"].isprintable() or not data["name"]:
            raise ConfigError(f"{source}: name must be a non-empty string on one line; got {excerpt(data['name'])}")
        layer = data["layer"]
        if not isinstance(layer, dict) or set(layer) != set(LAYER_FIELDS):
            got = excerpt(sorted(map(str, layer))) if isinstance(layer, dict) else type(layer).__name__
            raise ConfigError(f"{source}: 'layer' has exactly the keys {', '.join(LAYER_FIELDS)}; got {got}")
        if not isinstance(layer["attention"], dict) or not layer["attention"]:
            raise ConfigError(
                f"{source}: layer.attention maps candidate names to options, e.g. 'local: {{window: 64}}'"
            )
        attention: dict[str, AttentionChoice] = {}
        for cand, options in layer["attention"].items():
            attention[cand] = _attention_choice(cand, options, source, ATTENTION)
            same = [other for other, choice in attention.items() if choice == attention[cand]]
            if len(same) > 1:
                raise ConfigError(
                    f"{source}: layer.attention.{cand} repeats candidate '{same[0]}' (same type and options)"
                )
        space = cls(
            name=data["name"],
            dim=_positive_int(data["dim"], "dim", source),
            head_dim=_positive_int(data["head_dim"], "head_dim", source),
            depths=_depth_choices(data["depth"], source),
            attention=attention,
            heads=_int_choices(layer["heads"], "layer.heads", source),
            ffn_dims=_int_choices(layer["ffn_dim"], "layer.ffn_dim", source),
            memory=MemoryOptions.from_dict(data.get("memory") or {}, source),
        )
        return space

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "dim": self.dim,
            "head_dim": self.head_dim,
            "depth": list(self.depths),
            "layer": {
                "attention": {c: {"type": a.type, **a.options} for c, a in self.attention.items()},
                "heads": list(self.heads),
                "ffn_dim": list(self.ffn_dims),
            },
            # only when set, so that spaces written before the option read and hash the same
            **({"memory": dataclasses.asdict(self.memory)} if self.memory != MemoryOptions() else {}),
        }

    def __eq__(self, other):
        return isinstance(other, SearchSpace) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash(yaml.safe_dump(self.to_dict()))

    # -- decisions -------------------------------------------------------------------------
    def decisions(self) -> dict[str, tuple]:
        """Every decision of the space, in order: `depth`, then each layer's fields."""
        out: dict[str, tuple] = {"depth": self.depths}
        for i in range(self.max_depth):
            out[f"layer{i}.attention"] = tuple(self.attention)
            out[f"layer{i}.heads"] = self.heads
            out[f"layer{i}.ffn_dim"] = self.ffn_dims
        return out

    def arch_from_choices(self, choices: dict[str, Any]) -> Arch:
        """The arch for a {decision key: choice} mapping; keys of layers past depth may be absent."""
        depth = choices["depth"]
        layers = tuple(LayerArch(*(choices[f"layer{i}.{f}"] for f in LAYER_FIELDS)) for i in range(depth))
        arch = Arch(depth, layers)
        self.validate(arch)
        return arch

    def choices_of(self, arch: Arch) -> dict[str, Any]:
        """The inverse of `arch_from_choices` (only the decisions the arch makes)."""
        out: dict[str, Any] = {"depth": arch.depth}
        for i, layer in enumerate(arch.layers):
            for f in LAYER_FIELDS:
                out[f"layer{i}.{f}"] = getattr(layer, f)
        return out

    def op_types(self, arch: Arch) -> list[str]:
        """The registered op types of the arch's layers (its candidate names resolved), sorted."""
        return sorted({self.attention[layer.attention].type for layer in arch.layers})

    def all_op_types(self) -> list[str]:
        """The registered op types of every attention candidate, sorted."""
        return sorted({candidate.type for candidate in self.attention.values()})

    # -- points of the space ---------------------------------------------------------------
    def sample(self, seed_or_rng: int | random.Random | None = None) -> Arch:
        """A uniformly random arch: depth first, then each layer's choices independently."""
        rng = seed_or_rng if isinstance(seed_or_rng, random.Random) else random.Random(seed_or_rng)
        return self.arch_from_choices({key: rng.choice(options) for key, options in self.decisions().items()})

    def largest(self) -> Arch:
        """Deepest, widest arch; attention is the first listed candidate (the space's reference)."""
        return self._uniform(self.max_depth, next(iter(self.attention)), self.max_heads, self.max_ffn_dim)

    def smallest(self) -> Arch:
        """Shallowest, narrowest arch; attention is the first listed candidate."""
        return self._uniform(min(self.depths), next(iter(self.attention)), min(self.heads), min(self.ffn_dims))

    def _uniform(self, depth: int, attention: str, heads: int, ffn_dim: int) -> Arch:
        return Arch(depth, tuple(LayerArch(attention, heads, ffn_dim) for _ in range(depth)))

    def size(self) -> int:
        """The number of distinct architectures."""
        per_layer = len(self.attention) * len(self.heads) * len(self.ffn_dims)
        return sum(per_layer**d for d in self.depths)

    def validate(self, arch: Arch) -> None:
        """Raise a one-line ConfigError naming the first field of `arch` outside the space."""
        if not isinstance(arch, Arch):
            raise ConfigError(f"expected an Arch, got {type(arch).__name__}")
        if arch.depth not in self.depths:
            raise ConfigError(f"depth {arch.depth} is not in space '{self.name}'; allowed: {_join(self.depths)}")
        allowed = {"attention": tuple(self.attention), "heads": self.heads, "ffn_dim": self.ffn_dims}
        for i, layer in enumerate(arch.layers):
            for f in LAYER_FIELDS:
                if getattr(layer, f) not in allowed[f]:
                    raise ConfigError(
                        f"layer {i}: {f} {excerpt(getattr(layer, f))} is not in space "
                        f"'{self.name}'; allowed: {_join(allowed[f])}"
                    )


def _join(values) -> str:
    return ", ".join(str(v) for v in values)


def _positive_int(value: Any, field: str, source: str | None = None) -> int:
    """`value` as an int if it is a positive integer (numpy's too, never a bool); else one line."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1:
        return int(value)
    where = f"{source}: " if source else ""
    raise ConfigError(f"{where}{field} must be a positive integer; got {excerpt(value)}")


def _int_choices(value: Any, field: str, source: str) -> tuple[int, ...]:
    """A list of distinct positive integers (or one integer) as a sorted tuple."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError(f"{source}: {field} needs at least one choice")
    ints = [_positive_int(v, field, source) for v in values]
    repeated = sorted({v for v in ints if ints.count(v) > 1})
    if repeated:
        raise ConfigError(f"{source}: {field} lists {repeated[0]} more than once; choices must be distinct")
    return tuple(sorted(ints))


def _depth_choices(value: Any, source: str) -> tuple[int, ...]:
    depths = _int_choices(value, "depth", source)
    if depths[-1] > MAX_DEPTH:
        raise ConfigError(f"{source}: depth {depths[-1]} is more layers than a space may have (at most {MAX_DEPTH})")
    return depths


def _attention_choice(cand: Any, options: Any, source: str, registry) -> AttentionChoice:
    """One `layer.attention` entry, `name: {type: op, option: value, ...}`, checked."""
    if not isinstance(cand, str) or not re.fullmatch(r"[\w-]+", cand):
        # names reappear in arch files, decision keys and one-line messages
        raise ConfigError(
            f"{source}: layer.attention: candidate names are letters, digits, _ and -; got {excerpt(cand)}"
        )
    where = f"{source}: layer.attention.{cand}"
    if options is None:
        options = {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise ConfigError(
            f"{where}: options must be a mapping of option names to values, e.g. {{window: 64}}; got {excerpt(options)}"
        )
    options = dict(options)
    op = options.pop("type", cand)
    if not isinstance(op, str) or op not in registry:
        raise ConfigError(f"{where}: unknown attention {excerpt(op)}; known: {', '.join(registry.names())}")
    try:
        registry.get(op).make_config(**options)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return AttentionChoice(op, options)
