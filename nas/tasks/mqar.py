"""Multi-query associative recall (MQAR; Arora et al. 2023, Zoology,
https://arxiv.org/abs/2312.04927): key-value pairs, then queries whose values must be recalled.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from torch.utils.data import Dataset

from nas.tasks.base import IGNORE_INDEX, TASKS, GeneratedConfig, Task, check
from nas.tasks.cache import choose, generated_splits, shuffle_rows

BLANK, ANSWER = 1, 2  # filler between queries; the slot where a queried value is to be produced
FIRST_KEY = 3  # keys are FIRST_KEY.., values follow the keys
VERSION = 1  # bump when generated data changes, so that old caches are not reused


@dataclasses.dataclass(frozen=True)
class MQARConfig(GeneratedConfig):
    seq_len: int = 256  # sequence length N (pairs, then queries among blanks)
    num_pairs: int = 16  # key-value pairs at the start of each sequence
    num_queries: int = 16  # keys asked for (distinct, at most num_pairs)
    num_keys: int = 64  # key vocabulary
    num_values: int = 64  # value vocabulary

    def __post_init__(self):
        super().__post_init__()
        check(
            1 <= self.num_pairs <= self.num_keys,
            f"num_pairs must be in 1..num_keys ({self.num_keys}), got {self.num_pairs}",
        )
        check(
            1 <= self.num_queries <= self.num_pairs,
            f"num_queries must be in 1..num_pairs ({self.num_pairs}), got {self.num_queries}",
        )
        check(self.num_values >= 2, f"num_values must be >= 2, got {self.num_values}")
        check(
            self.positions_needed <= self.seq_len,
            f"seq_len {self.seq_len} cannot hold {self.num_pairs} pairs and "
            f"{self.num_queries} queries (needs {self.positions_needed})",
        )

    @property
    def positions_needed(self) -> int:
        return 2 * (self.num_pairs + self.num_queries)  # a pair and a query take two tokens each


@dataclasses.dataclass(frozen=True)
class MQARTaskConfig(MQARConfig):
    """MQAR's options: the pairs and queries of `MQARConfig` (which lookup shares), and which
    models read it. Lookup has no `causal`: its queries may come before their pairs."""

    causal: bool = False  # true: causal models, as Zoology's language models; false: bidirectional


class MQARDataset(Dataset):
    """Builds each sequence from its compact form when asked for it."""

    def __init__(self, config: MQARConfig, arrays: dict[str, np.ndarray]):
        self.config = config
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays["keys"])

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        keys = self.arrays["keys"][i].astype(np.int64) + FIRST_KEY
        values = self.arrays["values"][i].astype(np.int64) + FIRST_KEY + c.num_keys
        asked = self.arrays["asked"][i]
        where = 2 * c.num_pairs + 2 * self.arrays["slots"][i].astype(np.int64)
        tokens = np.full(c.seq_len, BLANK, dtype=np.int64)
        tokens[0 : 2 * c.num_pairs : 2] = keys
        tokens[1 : 2 * c.num_pairs : 2] = values
        tokens[where] = keys[asked]
        tokens[where + 1] = ANSWER
        target = np.full(c.seq_len, IGNORE_INDEX, dtype=np.int64)
        target[where + 1] = values[asked]
        return tokens, target

    def scored_targets(self) -> np.ndarray:
        values = np.take_along_axis(self.arrays["values"], self.arrays["asked"].astype(np.int64), 1)
        return values.ravel().astype(np.int64) + FIRST_KEY + self.config.num_keys


@TASKS.register("mqar")
class MQARTask(Task):
    """Recall the value bound to each queried key.

    A sequence is `k1 v1 k2 v2 ... kP vP`, then Q query slots `k ?` at random places among
    blanks. Target at each `?` is the value bound to the key before it, and nothing is scored
    elsewhere. The `?` token is the same for every query, so a non-causal model cannot read the
    answer at the answer position: it has to find the key among the pairs. Keys in a sequence
    are distinct; values are drawn independently, so an answer cannot be found by elimination.
    With `causal=true` the models are causal, as Zoology's: every query comes after the pairs,
    so each answer can be read from the past.
    """

    Config = MQARTaskConfig
    readout = "tokens"
    dataset_class = MQARDataset  # builds the sequences from the compact form

    def __init__(self, data_dir="data_cache", **options):
        super().__init__(data_dir, **options)
        c = self.config
        self.vocab_size = FIRST_KEY + c.num_keys + c.num_values
        self.num_classes = self.vocab_size
        self.seq_len = c.seq_len
        # an instance's option shadows Task's class-wide False; lookup's config has no such option
        self.causal = getattr(c, "causal", False)

    def load(self) -> dict[str, MQARDataset]:
        return {
            split: self.dataset_class(self.config, arrays) for split, arrays in generated_splits(self, VERSION).items()
        }

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """n sequences in compact form: keys, values, which pairs are asked, and where."""
        c = self.config
        pairs = self.sample_pairs(rng, n)
        slots = choose(rng, n, (c.seq_len - 2 * c.num_pairs) // 2, c.num_queries)
        return {**pairs, "slots": slots.astype(np.int16)}

    def sample_pairs(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """(n, pairs) distinct keys in random order and their values; (n, queries) pairs asked."""
        c = self.config
        keys = shuffle_rows(rng, choose(rng, n, c.num_keys, c.num_pairs))
        values = rng.integers(0, c.num_values, (n, c.num_pairs))
        asked = rng.random((n, c.num_pairs)).argsort(1)[:, : c.num_queries]
        return {"keys": keys.astype(np.int16), "values": values.astype(np.int16), "asked": asked.astype(np.int16)}
