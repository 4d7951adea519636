"""Pathfinder (Linsley et al. 2018, https://arxiv.org/abs/1805.08315) as in the Long Range Arena
(Tay et al. 2021, https://arxiv.org/abs/2011.04006): are two markers joined by one dashed path?
A numpy generator of LRA-style images, and a reader for LRA's released files.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from nas.errors import ConfigError
from nas.tasks.base import SPLITS, TASKS, GeneratedConfig, SequenceDataset, Task, check
from nas.tasks.cache import cache_dir, cached_arrays, sample_distinct

INK = 255  # pixel value of contours and markers on a black (0) background
TRIES = 100  # shapes and places tried per contour before the image is started again
VERSION = 1  # bump when generated data changes, so that old caches are not reused


@dataclasses.dataclass(frozen=True)
class PathfinderConfig(GeneratedConfig):
    """Pathfinder's options (`task.*`). Difficulty: task.contour_length=6 (LRA easy), 9
    (intermediate) or 14 (hard). LRA's released images instead:
    `task.path=/data/lra_release/pathfinder32/curv_contour_length_14`."""

    path: str | None = None  # LRA's folder for one difficulty (holds metadata/); None: generate
    resolution: int = 32  # image side in pixels; sequences are resolution**2 long (LRA: 32)
    contour_length: int = 6  # dashes per contour, the difficulty (LRA: 6, 9 or 14)
    dash_length: int = 2  # pixels per dash (LRA: paddle_length 2)
    dash_gap: int = 1  # empty pixels between dashes of a contour (LRA: paddle_margin 1)
    distractor_length: int | None = None  # dashes per distractor; None: contour_length // 3
    num_distractors: int | None = None  # distractor contours; None: 20 // distractor_length
    max_turn: float = 45.0  # largest change of direction from one dash to the next, degrees
    spacing: int = 1  # empty pixels at least between different contours (LRA: 1)

    def __post_init__(self):
        super().__post_init__()
        check(self.resolution >= 8, f"resolution must be >= 8, got {self.resolution}")
        check(
            self.contour_length >= 1 and self.dash_length >= 1 and self.dash_gap >= 0,
            "need contour_length >= 1, dash_length >= 1, dash_gap >= 0",
        )
        check(
            self.spacing >= max(1, self.dash_gap),
            f"spacing ({self.spacing}) must be >= 1 and >= dash_gap ({self.dash_gap}), or "
            "separate contours look like one",
        )
        check(
            self.distractor_length is None or self.distractor_length >= 1,
            f"distractor_length must be >= 1 or null, got {self.distractor_length}",
        )
        check(
            self.num_distractors is None or self.num_distractors >= 0,
            f"num_distractors must be >= 0 or null, got {self.num_distractors}",
        )

    def distractors(self) -> tuple[int, int]:
        """(length, count) of distractor contours, with LRA's defaults."""
        length = self.distractor_length or max(1, self.contour_length // 3)
        count = self.num_distractors if self.num_distractors is not None else 20 // length
        return length, count


@TASKS.register("pathfinder")
class PathfinderTask(Task):
    """Whether the two markers in an image are the two ends of one dashed contour.

    Every image has two long contours and some short distractors, none closer than `spacing`
    to another. Positives mark both ends of one long contour; negatives mark one end of each.
    Pixels are read row by row (token = pixel value + 1); half of each split is positive.
    """

    Config = PathfinderConfig

    def __init__(self, data_dir="data_cache", **options):
        super().__init__(data_dir, **options)
        self.vocab_size = 257
        self.num_classes = 2
        self.seq_len = self.config.resolution**2

    def load(self) -> dict[str, SequenceDataset]:
        c = self.config
        data = self.read() if c.path is not None else self.generate()
        images = data["images"].reshape(len(data["images"]), -1)
        if c.path is None:
            cuts = np.cumsum([0, c.num_train, c.num_val, c.num_test])
            order = np.arange(len(images))
        else:  # LRA's release has no splits; LRA takes 80% / 10% / 10%
            cuts = (np.array([0, 0.8, 0.9, 1.0]) * len(images)).astype(int)
            order = np.random.default_rng(c.seed).permutation(len(images))
        return {
            split: SequenceDataset(images[order[lo:hi]], data["labels"][order[lo:hi]], shift=1)
            for split, lo, hi in zip(SPLITS, cuts[:-1], cuts[1:])
        }

    def generate(self) -> dict[str, np.ndarray]:
        c = self.config
        params = {"version": VERSION, **dataclasses.asdict(c)}
        for not_generation in ("batch_size", "num_workers", "path"):
            params.pop(not_generation)
        path = cache_dir(self.data_dir, self.name, params) / "data.npz"
        total = c.num_train + c.num_val + c.num_test
        sample = lambda rng, n: draw_images(rng, n, c)
        return cached_arrays(path, lambda: sample_distinct(sample, total, np.random.default_rng(c.seed), self.name))

    def read(self) -> dict[str, np.ndarray]:
        """LRA's images, decoded once and cached in the data dir."""
        c = self.config
        root = Path(c.path).expanduser().resolve()
        metadata = sorted((root / "metadata").glob("*.npy"), key=numeric_name)
        if not metadata:
            raise ConfigError(f"pathfinder: no metadata/*.npy under {root}")
        stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in metadata]
        params = {"version": VERSION, "path": str(root), "metadata": stamp, "resolution": c.resolution}
        path = cache_dir(self.data_dir, self.name, params) / "images.npz"
        return cached_arrays(path, lambda: read_lra(root, metadata, c.resolution))


def numeric_name(path: Path):
    """Sort key putting 2.npy before 10.npy."""
    return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.stem)


def read_lra(root: Path, metadata: list[Path], resolution: int) -> dict[str, np.ndarray]:
    """LRA's layout: metadata/*.npy are text; each line `<folder> <png> <n> <label> ...`."""
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError("pathfinder: reading LRA's PNGs needs Pillow: pip install pillow") from None
    images, labels = [], []
    for meta in metadata:
        try:
            lines = meta.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"{meta}: not UTF-8 text ({err.reason} at byte {err.start}); "
                f"LRA's metadata files are text despite the .npy name"
            ) from None
        except OSError as err:  # e.g. no read permission
            raise ConfigError(f"{meta}: cannot read ({err.strerror})") from None
        for lineno, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 4 or fields[3] not in ("0", "1"):
                raise ConfigError(f"{meta}:{lineno}: expected '<folder> <file> <n> <label 0/1>'")
            png = root / fields[0] / fields[1]
            if not png.is_file():
                raise ConfigError(f"{meta}:{lineno}: missing image {png}")
            try:
                with Image.open(png) as img:
                    pixels = np.asarray(img.convert("L"), dtype=np.uint8)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
                # Pillow reports a broken PNG chunk as SyntaxError, a truncated file as OSError
                raise ConfigError(f"{meta}:{lineno}: {png} is not a readable image ({err})") from None
            if pixels.shape != (resolution, resolution):
                raise ConfigError(
                    f"{png}: image is {pixels.shape[1]}x{pixels.shape[0]}, expected resolution {resolution}"
                )
            images.append(pixels)
            labels.append(int(fields[3]))
    if not images:
        raise ConfigError(f"pathfinder: the metadata under {root} lists no images")
    return {"images": np.stack(images), "labels": np.array(labels, dtype=np.int64)}


def draw_images(rng: np.random.Generator, n: int, c: PathfinderConfig) -> dict[str, np.ndarray]:
    """n images, alternately negative and positive.

    Returns:
        {"images": (n, R, R) uint8, "labels": (n,), "markers": (n, 2, 2) marker centres (y, x)}
    """
    images = np.zeros((n, c.resolution, c.resolution), dtype=np.uint8)
    markers = np.zeros((n, 2, 2), dtype=np.int64)
    todo, idle = np.arange(n), 0
    while idle < 5:  # rounds in a row that drew no image
        done, drawn, marked = draw_batch(rng, len(todo), c, labels=todo % 2)
        images[todo[done]] = drawn[done]
        markers[todo[done]] = marked[done]
        todo, idle = todo[~done], 0 if done.any() else idle + 1
        if not len(todo):
            return {"images": images, "labels": np.arange(n) % 2, "markers": markers}
    raise ConfigError(
        "task 'pathfinder': contours rarely fit in the image; lower "
        "contour_length, num_distractors or spacing, or raise resolution"
    )


def draw_batch(rng: np.random.Generator, n: int, c: PathfinderConfig, labels: np.ndarray):
    """Try to draw n images: which succeeded, the (n, R, R) images, the (n, 2, 2) markers."""
    size = c.resolution
    # Markers reach one pixel past a long contour's ends, so those ends keep one pixel more
    # from other contours, and two more from each other: `near` is what such an end may not
    # touch. Both long contours get this, marked or not, so geometry does not give the label.
    taken = np.zeros((n, size, size), dtype=bool)  # pixels a new contour may not use
    near = np.zeros((n, size, size), dtype=bool)
    images = np.zeros((n, size, size), dtype=np.uint8)
    ok = np.ones(n, dtype=bool)
    ends = []  # (n, 2, 2): both end pixels (y, x) of the two long contours
    length, count = c.distractors()
    for i, dashes in enumerate([c.contour_length] * 2 + [length] * count):
        placed, pixels = place_contour(rng, taken, dashes, c, near if i < 2 else None)
        ok &= placed
        if not ok.any():
            return ok, images, np.zeros((n, 2, 2), dtype=np.int64)
        images[np.arange(n)[:, None], pixels[..., 0], pixels[..., 1]] = INK
        mark(taken, pixels, c.spacing)
        mark(near, pixels, c.spacing + 1)
        if i < 2:
            ends.append(pixels[:, [0, -1]])
            mark(taken, ends[-1], c.spacing + 1)
            mark(near, ends[-1], c.spacing + 2)
    # positives: both ends of the first contour; negatives: a random end of each
    pick = rng.integers(0, 2, (n, 2))
    first = ends[0][np.arange(n), np.where(labels == 1, 0, pick[:, 0])]
    second = np.where((labels == 1)[:, None], ends[0][:, 1], ends[1][np.arange(n), pick[:, 1]])
    markers = np.stack([first, second], axis=1)  # (n, 2, 2)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):  # clipped only in failed images, which are drawn again
            y, x = (markers + [dy, dx]).clip(0, size - 1).transpose(2, 0, 1)
            images[np.arange(n)[:, None], y, x] = INK
    return ok, images, markers


def place_contour(
    rng: np.random.Generator, taken: np.ndarray, dashes: int, c: PathfinderConfig, near: np.ndarray | None = None
):
    """A dashed contour per image avoiding `taken`, and with its two ends off `near` if given:
    (placed?, (n, P, 2) pixels (y, x)).

    Each try draws a shape and a random place where it fits with room for a marker around it.
    Rows without a free place after TRIES tries keep their last try and report placed=False,
    so that their image is drawn again. (Searching all places by FFT was slower than trying.)
    """
    n, size = len(taken), taken.shape[1]
    pixels = np.zeros((n, dashes * c.dash_length, 2), dtype=np.int64)
    placed = np.zeros(n, dtype=bool)
    todo = np.arange(n)
    for _ in range(TRIES):
        path = np.floor(shape(rng, len(todo), dashes, c) + rng.random((len(todo), 1, 2)) + 0.5)
        path = (path - path.min(1, keepdims=True)).astype(np.int64)  # (m, P, 2), from (0, 0)
        room = size - 2 - path.max(1)  # (m, 2): offsets 1..room keep the path inside
        offset = 1 + (rng.random(room.shape) * room.clip(min=0)).astype(np.int64)
        fits = (room >= 1).all(1)
        trial = (path + offset[:, None]).clip(0, size - 1)
        free = ~taken[todo[:, None], trial[..., 0], trial[..., 1]].any(1)
        if near is not None:
            free &= ~near[todo[:, None], trial[:, [0, -1], 0], trial[:, [0, -1], 1]].any(1)
        good = fits & free
        pixels[todo] = trial
        placed[todo[good]] = True
        todo = todo[~good]
        if not len(todo):
            break
    return placed, pixels


def shape(rng: np.random.Generator, n: int, dashes: int, c: PathfinderConfig) -> np.ndarray:
    """n random dashed contours from (0, 0): the (n, dashes * dash_length, 2) drawn positions.

    The pen moves one pixel per step, drawing for dash_length steps and lifting for dash_gap;
    its heading turns by up to max_turn at the start of each dash.
    """
    period = c.dash_length + c.dash_gap
    turns = np.deg2rad(rng.uniform(-c.max_turn, c.max_turn, (n, dashes)))
    turns[:, 0] = rng.uniform(0, 2 * np.pi, n)  # the first dash's heading
    heading = np.repeat(np.cumsum(turns, axis=1), period, axis=1)[:, : dashes * period - c.dash_gap]
    steps = np.stack([np.sin(heading), np.cos(heading)], axis=-1)  # (n, T, 2)
    path = np.cumsum(steps, axis=1) - steps  # the position before each step
    return path[:, np.arange(path.shape[1]) % period < c.dash_length]


def mark(taken: np.ndarray, pixels: np.ndarray, radius: int) -> None:
    """Mark every pixel within `radius` (in both axes) of `pixels` as taken."""
    n, size = len(taken), taken.shape[1]
    offsets = np.arange(-radius, radius + 1)
    ys = (pixels[..., 0, None, None] + offsets[:, None]).clip(0, size - 1)  # (n, P, K, 1)
    xs = (pixels[..., 1, None, None] + offsets[None, :]).clip(0, size - 1)  # (n, P, 1, K)
    taken[np.arange(n)[:, None, None, None], ys, xs] = True
