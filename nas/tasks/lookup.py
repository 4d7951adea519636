"""Key-value lookup: associative recall in one hop, each key and its value in one token.

The recall that separates exact softmax attention from its efficient approximations (Arora et
al. 2023, Zoology, https://arxiv.org/abs/2312.04927), in a form one attention layer solves, so
that small models learn it in a few epochs on a CPU (the quickstart's task). MQAR (mqar.py)
puts a key and its value in neighbouring tokens, which takes two layers to bind; here they
share one token, and pairs and queries are scattered, so no fixed position holds the answer.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nas.tasks.base import IGNORE_INDEX, TASKS
from nas.tasks.cache import choose, shuffle_rows
from nas.tasks.mqar import BLANK, FIRST_KEY, MQARConfig, MQARDataset, MQARTask


@dataclasses.dataclass(frozen=True)
class LookupConfig(MQARConfig):
    num_train: int = 4000  # small enough for the quickstart's 2 CPU cores
    num_val: int = 500
    num_test: int = 500
    seq_len: int = 64
    num_pairs: int = 4
    num_queries: int = 4
    num_keys: int = 8
    num_values: int = 8

    @property
    def positions_needed(self) -> int:
        return self.num_pairs + self.num_queries  # one token each


class LookupDataset(MQARDataset):
    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        keys = self.arrays["keys"][i].astype(np.int64)
        values = self.arrays["values"][i].astype(np.int64)
        asked = self.arrays["asked"][i]
        places = self.arrays["places"][i].astype(np.int64)
        pairs, queries = places[: c.num_pairs], places[c.num_pairs :]
        first_value = FIRST_KEY + c.num_keys
        tokens = np.full(c.seq_len, BLANK, dtype=np.int64)
        tokens[pairs] = first_value + c.num_values + keys * c.num_values + values
        tokens[queries] = FIRST_KEY + keys[asked]
        target = np.full(c.seq_len, IGNORE_INDEX, dtype=np.int64)
        target[queries] = first_value + values[asked]
        return tokens, target


@TASKS.register("lookup")
class LookupTask(MQARTask):
    """At each query key, output the value bound to it by a pair token.

    A sequence holds P pair tokens, each binding a key to a value, and Q query tokens (a key
    each) at random places among blanks. The target at a query is the value bound to its key;
    nothing else is scored. Keys in a sequence are distinct and values independent, as in MQAR.
    A local window misses pairs beyond its reach, and low-rank (Linformer) or random-feature
    (Performer) attention blur the one-token match that softmax attention makes.
    Token ids: blank, keys, values (targets only), then one pair token per (key, value).
    """

    Config = LookupConfig
    dataset_class = LookupDataset

    def __init__(self, data_dir="data_cache", **options):
        super().__init__(data_dir, **options)
        self.vocab_size += self.config.num_keys * self.config.num_values  # the pair tokens
        self.num_classes = self.vocab_size

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """n sequences in compact form: keys, values, which pairs are asked, and the places of
        the pairs, then of the queries."""
        c = self.config
        pairs = self.sample_pairs(rng, n)
        places = shuffle_rows(rng, choose(rng, n, c.seq_len, c.num_pairs + c.num_queries))
        return {**pairs, "places": places.astype(np.int16)}
