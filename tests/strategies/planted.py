"""Toy tasks whose best attention type is known, and a helper that runs a search on them."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from nas.model import ModelShape
from nas.space import SearchSpace


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
    return SearchSpace.from_dict({
        "name": "planted", "dim": 32, "head_dim": 16, "depth": [1, 2],
        "layer": {"attention": {"full": {}, "local": {"window": window}},
                  "heads": [2], "ffn_dim": [64]},
    })


def trainer(tmp_path, epochs: int, **kwargs) -> pl.Trainer:
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path,
                      enable_checkpointing=False, **kwargs)
