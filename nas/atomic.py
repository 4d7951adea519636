"""Files and folders that appear whole or not at all: each is written under a temporary name
beside its place (the same filesystem), then renamed over it, so that a kill or a full disk
while writing leaves the old file or none, never a cut-off one. The one place in `nas` that
renames files (a test holds it to that).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO


def partial_path(path: str | Path, unique: bool = True) -> Path:
    """Where `path` is written before it is renamed into place: `<name>.<pid>.partial`, so that
    processes writing one file at once (workers sharing a run) never write one partial file;
    `<name>.partial` when one process writes it (a leftover of a killed run is then rewritten)."""
    path = Path(path)
    return path.with_name(f"{path.name}.{os.getpid()}.partial" if unique else f"{path.name}.partial")


@contextlib.contextmanager
def atomic_path(
    path: str | Path, unique: bool = True, previous: str | Path | None = None, publish: bool = True
) -> Iterator[Path]:
    """A temporary path beside `path` for the block to write, renamed to `path` when the block
    ends; removed when the block raises (a KeyboardInterrupt too).

        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    Args:
        unique: a temporary name of this process's own (`partial_path`).
        previous: where the old `path`, if any, goes before the new one takes its place
            (e.g. `last.ckpt.prev`, for a file damaged after it was written).
        publish: False where this process only goes through the motions and another one
            writes (DDP ranks other than 0): nothing is renamed or removed.
    """
    path = Path(path)
    tmp = partial_path(path, unique)
    if not publish:
        yield tmp
        return
    try:
        yield tmp
        if previous is not None and path.is_file():
            os.replace(path, previous)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, content: str | bytes | Callable[[IO[bytes]], object], unique: bool = True) -> None:
    """Write `content` to `path`, whole or not at all: text (UTF-8), bytes, or a function that
    writes to the open binary file (e.g. `lambda f: np.savez(f, **arrays)`). The data reaches the
    disk (fsync) before the rename, so a power cut cannot leave an empty file under the name."""
    with atomic_path(path, unique) as tmp, open(tmp, "wb") as f:
        if callable(content):
            content(f)
        else:
            f.write(content.encode() if isinstance(content, str) else content)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_folder(path: str | Path, owned: Iterable[str] = ()) -> Iterator[Path]:
    """An empty temporary folder beside `path` (`.<name>.partial`; a leftover of a killed run is
    removed first) for the block to fill; when the block ends it becomes `path`: renamed into
    place when `path` is absent or empty, else each of its files replaces the file of that name
    in `path` and the `owned` names it lacks are removed there, while other files in `path` stay.
    Removed when the block raises."""
    path = Path(path)
    staging = path.with_name(f".{path.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        if not path.exists():
            os.replace(staging, path)
            return
        for name in owned:
            if not (staging / name).exists():
                (path / name).unlink(missing_ok=True)
        for file in staging.iterdir():
            os.replace(file, path / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
