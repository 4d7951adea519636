"""Selective copying (Gu & Dao 2023, Mamba, https://arxiv.org/abs/2312.00752): reproduce, in
order, the few content tokens scattered at random places among noise.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from torch.utils.data import Dataset

from nas.tasks.base import IGNORE_INDEX, TASKS, GeneratedConfig, Task, check
from nas.tasks.cache import choose, generated_splits

NOISE, ANSWER = 1, 2  # the filler token; the token at each answer position
FIRST_CONTENT = 3  # content tokens are FIRST_CONTENT..FIRST_CONTENT + alphabet - 1
VERSION = 1  # bump when generated data changes, so that old caches are not reused


@dataclasses.dataclass(frozen=True)
class SelectiveCopyConfig(GeneratedConfig):
    """Selective copying's options (`task.*`). Mamba's setting: `task.seq_len=4096`."""

    seq_len: int = 256  # sequence length N, answer positions included (Mamba: 4096; up to 16K)
    num_tokens: int = 16  # content tokens to copy (Mamba: 16)
    alphabet: int = 16  # distinct content tokens (Mamba: 16)

    def __post_init__(self):
        super().__post_init__()
        check(self.num_tokens >= 1, f"num_tokens must be >= 1, got {self.num_tokens}")
        check(self.alphabet >= 2, f"alphabet must be >= 2, got {self.alphabet}")
        check(
            self.seq_len >= 2 * self.num_tokens,
            f"seq_len must be >= 2 * num_tokens ({2 * self.num_tokens}), got {self.seq_len}",
        )


@TASKS.register("selective_copy")
class SelectiveCopyTask(Task):
    """Copy the content tokens, in order, to the answer positions at the end.

    The first N - M positions hold M content tokens at random places, noise elsewhere; the last
    M positions hold one fixed answer token each, and the target at the j-th of them is the
    j-th content token. Answer positions never show the answer, so a non-causal model must
    find and order the content tokens itself.
    """

    Config = SelectiveCopyConfig
    readout = "tokens"

    def __init__(self, data_dir="data_cache", **options):
        super().__init__(data_dir, **options)
        c = self.config
        self.vocab_size = FIRST_CONTENT + c.alphabet
        self.num_classes = self.vocab_size
        self.seq_len = c.seq_len

    def load(self) -> dict[str, SelectiveCopyDataset]:
        return {
            split: SelectiveCopyDataset(self.config, arrays["positions"], arrays["content"])
            for split, arrays in generated_splits(self, VERSION).items()
        }

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """n sequences in compact form: where the content tokens are, and which they are."""
        c = self.config
        positions = choose(rng, n, c.seq_len - c.num_tokens, c.num_tokens)  # increasing
        content = rng.integers(0, c.alphabet, (n, c.num_tokens))
        return {"positions": positions.astype(np.int32), "content": content.astype(np.int16)}


class SelectiveCopyDataset(Dataset):
    """Builds each sequence from its compact form when asked for it."""

    def __init__(self, config: SelectiveCopyConfig, positions: np.ndarray, content: np.ndarray):
        self.config = config
        self.positions = positions
        self.content = content

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        content = self.content[i].astype(np.int64) + FIRST_CONTENT
        tokens = np.full(c.seq_len, NOISE, dtype=np.int64)
        tokens[self.positions[i]] = content
        tokens[c.seq_len - c.num_tokens :] = ANSWER
        target = np.full(c.seq_len, IGNORE_INDEX, dtype=np.int64)
        target[c.seq_len - c.num_tokens :] = content
        return tokens, target

    def scored_targets(self) -> np.ndarray:
        return self.content.ravel().astype(np.int64) + FIRST_CONTENT
