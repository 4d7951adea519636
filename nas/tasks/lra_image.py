"""LRA Image (Tay et al. 2021, https://arxiv.org/abs/2011.04006): CIFAR-10 (Krizhevsky 2009)
as sequences of 1024 grey levels, read from the dataset's binary batches as LRA reads them,
and a generated default of simple shapes that runs without the data.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from nas.errors import ConfigError
from nas.tasks.base import TASKS, GeneratedConfig, SequenceDataset, Task
from nas.tasks.cache import generated_splits

SIDE = 32  # CIFAR-10's images are 32x32
RECORD = 1 + 3 * SIDE * SIDE  # bytes per record: the label, then the R, G and B planes row by row
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
VAL_SHARE = 0.1  # LRA: tfds cifar10 train[:90%] trains, train[90%:] validates
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SHAPES = ("square", "disc", "ring", "cross")  # the generated images' classes
# tf.image.rgb_to_grayscale, which LRA applies (lra_benchmarks/image/input_pipeline.py)
GREY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)
VERSION = 1  # bump when generated data changes, so that old caches are not reused


@dataclasses.dataclass(frozen=True)
class ImageConfig(GeneratedConfig):
    """LRA Image's options (`task.*`). Generates images of simple shapes by default. CIFAR-10's
    binary version (cifar-10-binary.tar.gz, never the pickled Python batches):
    `task.path=~/data/cifar-10-batches-bin`."""

    path: str | None = None  # folder with data_batch_1..5.bin and test_batch.bin; None: generate


@TASKS.register("lra_image")
class ImageTask(Task):
    """The class of a 32x32 image read row by row as 1024 grey levels (token = level + 1).

    CIFAR-10's colour is made grey as LRA does (tf.image.rgb_to_grayscale); its 50,000 training
    images split in LRA's proportions: the first 90% in file order train, the last 10% validate
    (TFDS, which LRA reads, orders the images its own way, so its validation images differ); the
    10,000 test images test. Generated images hold one shape (square, disc, ring or cross) of random
    size, place and brightness on a dim noisy background.
    """

    Config = ImageConfig

    def __init__(self, data_dir="data_cache", **options):
        super().__init__(data_dir, **options)
        self.vocab_size = 257
        self.num_classes = len(CIFAR_CLASSES) if self.config.path is not None else len(SHAPES)
        self.seq_len = SIDE * SIDE

    def describe(self) -> dict:
        names = CIFAR_CLASSES if self.config.path is not None else SHAPES
        return {**super().describe(), "classes": list(names)}

    def load(self) -> dict[str, SequenceDataset]:
        if self.config.path is None:
            generated = generated_splits(self, VERSION)
            return {split: SequenceDataset(a["pixels"], a["label"], shift=1) for split, a in generated.items()}
        folder = Path(self.config.path).expanduser()
        train = [read_batch(folder / name) for name in TRAIN_FILES]
        pixels = np.concatenate([p for p, _ in train])
        labels = np.concatenate([y for _, y in train])
        cut = round((1 - VAL_SHARE) * len(labels))
        test_pixels, test_labels = read_batch(folder / TEST_FILE)
        return {
            "train": SequenceDataset(pixels[:cut], labels[:cut], shift=1),
            "val": SequenceDataset(pixels[cut:], labels[cut:], shift=1),
            "test": SequenceDataset(test_pixels, test_labels, shift=1),
        }

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """n generated images: grey levels (n, 1024) uint8 and labels (n,)."""
        return draw_shapes(rng, n)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch: grey levels (n, 1024) uint8 and labels (n,) int64; a
    truncated record or a label outside 0-9 is one ConfigError line naming the record."""
    if not path.is_file():
        raise ConfigError(
            f"lra_image: missing file {path}; cifar-10-batches-bin holds {', '.join(TRAIN_FILES)} and {TEST_FILE}"
        )
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    whole, rest = divmod(len(data), RECORD)
    if rest:
        raise ConfigError(
            f"{path}: record {whole + 1} (from byte {whole * RECORD}) is truncated: {rest} of {RECORD} bytes"
        )
    if not whole:
        raise ConfigError(f"{path}: no records")
    records = data.reshape(whole, RECORD)
    labels = records[:, 0].astype(np.int64)
    bad = np.flatnonzero(labels >= len(CIFAR_CLASSES))
    if len(bad):
        i = int(bad[0])
        raise ConfigError(f"{path}: record {i + 1} (byte {i * RECORD}): label {labels[i]} is not a class 0-9")
    return greyscale(records[:, 1:].reshape(whole, 3, SIDE * SIDE)), labels


def greyscale(planes: np.ndarray) -> np.ndarray:
    """(n, 3, p) uint8 R, G, B planes -> (n, p) uint8 grey levels, computed as
    tf.image.rgb_to_grayscale does for uint8 images: in float32, each channel scaled by 1/255,
    weighted 0.2989 R + 0.5870 G + 0.1140 B, times 255.5 and truncated."""
    r, g, b = (planes[:, c].astype(np.float32) * np.float32(1 / 255) for c in range(3))
    grey = r * GREY_WEIGHTS[0] + g * GREY_WEIGHTS[1] + b * GREY_WEIGHTS[2]  # (n, p) float32
    return (grey * np.float32(255.5)).astype(np.uint8)


def draw_shapes(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """n images of one shape each (label: its index in SHAPES), radius 4-9 pixels, anywhere it
    fits, brightness 128-255, on a background of a random level 0-48 plus noise of 0-15."""
    label = rng.integers(0, len(SHAPES), n)
    radius = rng.integers(4, 10, n)[:, None, None]
    cy = rng.integers(radius[:, 0, 0], SIDE - radius[:, 0, 0])[:, None, None]
    cx = rng.integers(radius[:, 0, 0], SIDE - radius[:, 0, 0])[:, None, None]
    y, x = np.mgrid[:SIDE, :SIDE]
    dy, dx = np.abs(y - cy), np.abs(x - cx)  # (n, 32, 32)
    distance = np.sqrt(dy**2 + dx**2)
    arm = np.maximum(1, radius // 3)
    inside = np.stack(
        [
            (dy <= radius * 0.8) & (dx <= radius * 0.8),  # square, of about the disc's area
            distance <= radius,  # disc
            (distance <= radius) & (distance > radius * 0.55),  # ring
            ((dy <= arm) & (dx <= radius)) | ((dx <= arm) & (dy <= radius)),  # cross
        ]
    )[label, np.arange(n)]
    background = rng.integers(0, 49, (n, 1, 1)) + rng.integers(0, 16, (n, SIDE, SIDE))
    images = np.where(inside, rng.integers(128, 256, (n, 1, 1)), background)
    return {"pixels": images.reshape(n, SIDE * SIDE).astype(np.uint8), "label": label}
