"""LRA Image: CIFAR-10's binary batches written here byte for byte, greyscale as LRA's
tf.image.rgb_to_grayscale computes it, LRA's 90/10 split, one-line errors on bad records, and
the generated shapes."""

import re

import numpy as np
import pytest

from nas.errors import ConfigError
from nas.tasks.lra_image import RECORD, SHAPES, ImageTask, greyscale
from tests.tasks.task_checks import check_batches, check_determinism, check_disjoint

SMALL = dict(num_train=64, num_val=16, num_test=16, batch_size=8)


def records(rng, n: int) -> tuple[np.ndarray, np.ndarray, bytes]:
    """(labels, RGB images (n, 32, 32, 3), their bytes as CIFAR-10's binary version stores
    them: per record the label byte, then the red, green and blue planes, each row by row)."""
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)
    data = b"".join(bytes([int(y)]) + image.transpose(2, 0, 1).tobytes() for y, image in zip(labels, images))
    return labels, images, data


def cifar_folder(tmp_path, per_batch=4, test=3):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    written = []
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels, images, data = records(rng, test if name == "test_batch.bin" else per_batch)
        (folder / name).write_bytes(data)
        written.append((labels, images))
    return folder, written


def tf_grey(rgb: np.ndarray) -> np.ndarray:
    """tf.image.rgb_to_grayscale on uint8, step by step as TensorFlow writes it (one pixel at a
    time in float32): convert_image_dtype to float (x * (1/255)), the dot with
    [0.2989, 0.5870, 0.1140], convert_image_dtype back (x * 255.5, cast truncates)."""
    f32 = np.float32
    out = np.zeros(rgb.shape[:-1], dtype=np.uint8)
    for index in np.ndindex(*rgb.shape[:-1]):
        r, g, b = (f32(c) * f32(1.0 / 255) for c in rgb[index])
        grey = f32(f32(r * f32(0.2989)) + f32(g * f32(0.5870))) + f32(b * f32(0.1140))
        out[index] = int(f32(grey * f32(255.5)))
    return out


def test_greyscale_is_tensorflows():
    # hand-computed: white 0.9999 * 255.5 = 255.47; red 76.37; green 149.98 (truncated, not rounded); blue 29.13
    pixels = np.array([[255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30], [0, 0, 0]], np.uint8)
    assert greyscale(pixels.T[None]).ravel().tolist() == [255, 76, 149, 29, 18, 0]
    rgb = np.random.default_rng(1).integers(0, 256, (2, 300, 3)).astype(np.uint8)
    np.testing.assert_array_equal(greyscale(rgb.transpose(0, 2, 1)), tf_grey(rgb))


def test_reads_binary_batches_with_lras_split(tmp_path):
    folder, written = cifar_folder(tmp_path, per_batch=4, test=3)
    task = ImageTask(data_dir=tmp_path, path=str(folder), batch_size=4)
    task.setup()
    assert (task.vocab_size, task.num_classes, task.seq_len) == (257, 10, 1024)
    labels = np.concatenate([y for y, _ in written[:5]])
    grey = np.concatenate([tf_grey(images).reshape(len(images), 1024) for _, images in written[:5]])
    # 20 training images: the first 18 in file order train, the last 2 validate (LRA's 90%/10%)
    for split, rows in (("train", slice(0, 18)), ("val", slice(18, 20))):
        data = task.splits[split]
        assert [int(y) for _, y in data] == labels[rows].tolist()
        np.testing.assert_array_equal(np.stack([t for t, _ in data]), grey[rows].astype(np.int64) + 1)
    test_labels, test_images = written[5]
    assert [int(y) for _, y in task.splits["test"]] == test_labels.tolist()
    np.testing.assert_array_equal(task.splits["test"][0][0], tf_grey(test_images[0]).ravel() + 1)
    assert task.describe()["classes"][:3] == ["airplane", "automobile", "bird"]
    check_batches(task)


def test_bad_records_are_one_line(tmp_path):
    folder, _ = cifar_folder(tmp_path)
    path = folder / "data_batch_3.bin"
    data = path.read_bytes()
    task = lambda: ImageTask(data_dir=tmp_path, path=str(folder))
    path.write_bytes(data[:-100])
    with pytest.raises(ConfigError, match=re.escape(f"{path}: record 4 (from byte {3 * RECORD}) is truncated")):
        task().setup()
    path.write_bytes(data[:RECORD] + bytes([12]) + data[RECORD + 1 :])
    with pytest.raises(ConfigError, match=re.escape(f"{path}: record 2 (byte {RECORD}): label 12 is not a class 0-9")):
        task().setup()
    path.write_bytes(b"")
    with pytest.raises(ConfigError, match="no records"):
        task().setup()
    path.unlink()
    with pytest.raises(ConfigError, match="missing file .*data_batch_3.bin"):
        task().setup()


def test_generated_shapes(tmp_path):
    task = ImageTask(data_dir=tmp_path, **SMALL)
    assert task.num_classes == len(SHAPES) and task.describe()["classes"] == list(SHAPES)
    check_batches(task)
    check_disjoint(task)
    check_determinism(lambda seed, folder: ImageTask(data_dir=folder, seed=seed, **SMALL), tmp_path)
    for tokens, label in task.splits["train"]:
        image = (tokens - 1).reshape(32, 32)
        ys, xs = np.nonzero(image >= 128)  # the shape; the background stays below 64
        assert len(ys) and image[image < 128].max() < 64
        height, width = np.ptp(ys) + 1, np.ptp(xs) + 1
        assert abs(height - width) <= 1  # every shape is as tall as wide
        filled = len(ys) / (height * width)
        if SHAPES[label] == "square":
            assert filled == 1
        elif SHAPES[label] == "disc":
            assert 0.6 < filled < 0.9  # pi/4 of its box
        else:
            assert filled < 0.75  # ring and cross leave much of their box empty
