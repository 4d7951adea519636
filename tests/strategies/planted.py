"""Toy tasks whose best attention type is known, a stand-in supernet whose every arch scores a
known value, and a helper that runs a search on them."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from nas.metrics import HIGHER_IS_BETTER
from nas.model import ModelShape
from nas.space import Arch, SearchSpace


class FetchTask(pl.LightningDataModule):
    """At the last position, output the token found `distance` positions earlier.

    The last input is a query symbol, never the answer. With `distance` beyond a local window's
    reach, only a global op can solve it; with `distance` = 1 a local window solves it as well as
    full attention does.
    """

    vocab_size, readout, metric = 10, "tokens", "acc"
    num_classes = vocab_size

    @property
    def shape(self) -> ModelShape:
        return ModelShape(self.vocab_size, self.num_classes, self.seq_len, self.readout)

    def __init__(self, seq_len: int = 24, distance: int = 23, size: int = 2048, batch_size: int = 32, seed: int = 0):
        super().__init__()
        self.seq_len, self.distance, self.size, self.batch_size, self.seed = seq_len, distance, size, batch_size, seed

    def _split(self, seed: int, size: int) -> TensorDataset:
        g = torch.Generator().manual_seed(seed)
        tokens = torch.randint(1, self.vocab_size - 1, (size, self.seq_len), generator=g)
        tokens[:, -1] = self.vocab_size - 1  # the query symbol
        target = torch.full_like(tokens, -100)
        target[:, -1] = tokens[:, -1 - self.distance]
        return TensorDataset(tokens, torch.ones_like(tokens, dtype=torch.bool), target)

    def setup(self, stage=None):
        self.train_set = self._split(self.seed, self.size)
        self.val_set = self._split(self.seed + 1, 512)

    def _loader(self, data, shuffle):
        def collate(rows):
            tokens, mask, target = map(torch.stack, zip(*rows))
            return {"tokens": tokens, "mask": mask, "target": target}

        return DataLoader(data, batch_size=self.batch_size, shuffle=shuffle, collate_fn=collate)

    def train_dataloader(self):
        return self._loader(self.train_set, True)

    def val_dataloader(self):
        return self._loader(self.val_set, False)


def planted_space(window: int = 4) -> SearchSpace:
    """Full attention versus a small local window, one or two narrow layers."""
    return SearchSpace.from_dict(
        {
            "name": "planted",
            "dim": 32,
            "head_dim": 16,
            "depth": [1, 2],
            "layer": {"attention": {"full": {}, "local": {"window": window}}, "heads": [2], "ffn_dim": [64]},
        }
    )


def trainer(tmp_path, epochs: int, **kwargs) -> pl.Trainer:
    """A quiet CPU Trainer; it checkpoints only through the callbacks it is given."""
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        enable_checkpointing="callbacks" in kwargs,
        **kwargs,
    )


def toy_space() -> SearchSpace:
    """20 distinct archs (depth 1 or 2; full or local attention; 1 or 2 heads), small enough to
    enumerate: the known optimum and Pareto front of `toy_score` come from every arch."""
    return SearchSpace.from_dict(
        {
            "name": "toy",
            "dim": 16,
            "head_dim": 8,
            "depth": [1, 2],
            "layer": {"attention": {"full": {}, "local": {"window": 4}}, "heads": [1, 2], "ffn_dim": [16]},
        }
    )


def every_arch(space: SearchSpace) -> list[Arch]:
    decisions = space.decisions()
    archs = (space.arch_from_choices(dict(zip(decisions, c))) for c in itertools.product(*decisions.values()))
    return list(dict.fromkeys(archs))


def toy_accuracy(arch: Arch) -> float:
    """A known accuracy, in hundredths below 1 (what 100 rows can score exactly): layer 0 needs
    full attention, a second layer helps (local more), more heads help a little. The best arch,
    depth 2 of (full, 2 heads) then (local, 2 heads), is neither the cheapest nor the costliest."""
    first = arch.layers[0]
    value = 0.40 + 0.20 * (first.attention == "full") + 0.04 * (first.heads == 2)
    if arch.depth == 2:
        second = arch.layers[1]
        value += (0.08 if second.attention == "local" else 0.03) + 0.01 * (second.heads == 2)
    return round(value, 2)


def toy_score(arch: Arch, metric: str) -> float:
    """`toy_accuracy` as the metric: bits per byte fall as accuracy rises (lower is better)."""
    return toy_accuracy(arch) if metric == "acc" else round(1.5 - toy_accuracy(arch), 2)


class ScoredSupernet(nn.Module):
    """A stand-in supernet: on `batches()`, every arch scores exactly `score(arch)` through the
    real evaluation (`nas.metrics`), so a strategy's choice can be checked against a known optimum.

    With metric "acc", the first round(100 * score) of 100 rows are right; the loss then *rises*
    with accuracy (1 + score), so ranking by the loss instead of the metric picks another arch.
    With "bpb", every row's cross-entropy is score * ln 2 (bpb is that loss in bits).
    """

    rows = 100

    def __init__(self, space: SearchSpace, metric: str = "acc", score: Callable[[Arch, str], float] = toy_score):
        super().__init__()
        self.space, self.metric, self.score = space, metric, score
        self.shape = ModelShape(10, 2, 24, "classify")  # costs are taken at this shape

    def batches(self) -> list[dict]:
        tokens = torch.ones(self.rows, self.shape.max_len, dtype=torch.long)
        return [
            {
                "tokens": tokens,
                "mask": torch.ones_like(tokens, dtype=torch.bool),
                "target": torch.zeros(self.rows, dtype=torch.long),
            }
        ]  # class 0 is right

    def forward(self, tokens: Tensor, arch: Arch, mask: Tensor | None = None) -> Tensor:
        value, b = self.score(arch, self.metric), tokens.shape[0]
        logits = torch.zeros(b, 2)  # (b, C)
        if self.metric == "bpb":  # softplus(-z) = value * ln 2 on every row
            logits[:, 0] = -math.log(2**value - 1)
            return logits
        right = round(value * b)
        logits[:right, 0] = 4.0  # right, at cross-entropy softplus(-4) each
        wrong = (b * (1 + value) - right * math.log1p(math.exp(-4.0))) / (b - right)  # each wrong row's
        logits[right:, 1] = math.log(math.expm1(wrong))  # softplus(z) = wrong
        return logits


def known_best(space: SearchSpace, metric: str) -> Arch:
    """The arch with the best `toy_score` (unique in `toy_space`)."""
    sign = 1 if HIGHER_IS_BETTER[metric] else -1
    return max(every_arch(space), key=lambda arch: sign * toy_score(arch, metric))


def known_front(space: SearchSpace, metric: str, cost_of: Callable[[Arch], float]) -> set[Arch]:
    """The archs no other arch beats on both `toy_score` and cost, by enumerating the space."""
    sign = 1 if HIGHER_IS_BETTER[metric] else -1
    points = {arch: (sign * toy_score(arch, metric), -cost_of(arch)) for arch in every_arch(space)}  # both up
    return {a for a, p in points.items() if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points.values())}


def make(name: str, space, seed: int = 0, seq_len: int | None = None, storage: str | None = None, **options):
    """The strategy `name` built as nas-search builds it, from its (nested) options; random and
    evolution train on one random path per step unless `fair` is given (the quicker SPOS), and
    `fixed` takes an Arch as well as a file."""
    from nas.strategies import STRATEGIES, SearchSetting, build_strategy

    cls, setting = STRATEGIES.get(name), SearchSetting(seq_len=seq_len, storage=storage)
    if name in ("random", "evolution"):
        options.setdefault("fair", False)
    if isinstance(options.get("arch"), Arch):
        return cls(space, cls.Config(**options), setting, seed)
    return build_strategy(cls, space, options, setting, seed)
