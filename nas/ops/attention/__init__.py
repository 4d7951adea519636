"""Candidate attention ops, one file each, registered by name in `ATTENTION`.

Every module in this folder is imported here, so adding an op is adding one file.
"""

import importlib
import logging
import pkgutil
from collections.abc import Iterable, Mapping

from nas.ops.attention.base import AttentionCore, SelfAttention
from nas.ops.attention.registry import ATTENTION

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "ATTENTION",
    "AttentionCore",
    "SelfAttention",
    "build",
    "make_core",
    "revisions",
    "revision_changes",
    "warn_revision_changes",
]


def make_core(name: str, head_dim: int, max_heads: int, max_len: int, causal: bool = False, **options) -> AttentionCore:
    """The core of op `name` with its options checked; `causal`: its causal form."""
    cls = ATTENTION.get(name)
    return cls(head_dim, max_heads, max_len, cls.make_config(**options), causal=causal)


def build(
    name: str, dim: int, heads: int, max_len: int, head_dim: int | None = None, causal: bool = False, **options
) -> SelfAttention:
    """A self-attention layer of op `name`: forward(x (b, n, D), mask (b, n) bool) -> (b, n, D)."""
    head_dim = head_dim or dim // heads
    return SelfAttention(dim, heads, head_dim, make_core(name, head_dim, heads, max_len, causal, **options))


def revisions(types: Iterable[str]) -> dict[str, int]:
    """Op type -> `AttentionCore.revision`, for the given types past their first revision.

    What checkpoints, exports and cached standalone results record. Types at revision 1 are left
    out, so a record made before revisions existed equals today's for every op that never changed.
    """
    current = {name: ATTENTION.get(name).revision for name in sorted(set(types))}
    return {name: revision for name, revision in current.items() if revision > 1}


def revision_changes(saved: Mapping[str, int] | None, types: Iterable[str]) -> list[str]:
    """'<op> revision <saved> -> <now>' for each of `types` whose revision in a record (absent:
    1) differs from this code's: the ops that compute otherwise than when the record was made."""
    saved = saved or {}
    now = revisions(types)
    return [
        f"{name} revision {saved.get(name, 1)} -> {now.get(name, 1)}"
        for name in sorted(set(types))
        if saved.get(name, 1) != now.get(name, 1)
    ]


def warn_revision_changes(saved: Mapping[str, int] | None, types: Iterable[str], source: str) -> None:
    """A warning per op of `types` that computes otherwise from the same weights than when
    `source` (a checkpoint, an export) was written; `saved` is its `op_revisions` record (None:
    written before records existed). The weights still load: outputs differ, as after any change
    to an op."""
    for change in revision_changes(saved, types):
        logging.getLogger("nas").warning(
            "%s was written by %s: its outputs differ from this version's; retrain (or use the "
            "version that wrote it) for the same results",
            source,
            change,
        )
