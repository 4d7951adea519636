"""Pathfinder: markers are joined exactly in positives, classes balance, LRA's layout reads."""

import numpy as np
import pytest

from nas.errors import ConfigError
from nas.tasks.pathfinder import INK, PathfinderConfig, PathfinderTask, draw_images
from tests.tasks.task_checks import check_batches, check_determinism, check_disjoint

TINY = dict(num_train=40, num_val=10, num_test=10, batch_size=8)


def make(seed, data_dir, **overrides):
    return PathfinderTask(data_dir=data_dir, seed=seed, **{**TINY, **overrides})


def components(images: np.ndarray) -> np.ndarray:
    """Labels of the 8-connected components of inked pixels, per image (0 = background)."""
    ink = images > 0
    labels = np.where(ink, np.arange(1, ink.size + 1).reshape(ink.shape), 0)
    h, w = labels.shape[1:]
    while True:
        padded = np.pad(labels, ((0, 0), (1, 1), (1, 1)))
        shifted = [padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]
        spread = np.max(shifted, axis=0)
        spread = np.where(ink, spread, 0)
        if (spread == labels).all():
            return labels
        labels = spread


@pytest.mark.parametrize("length", [6, 14])
def test_markers_are_joined_exactly_in_positive_images(length):
    # Solid contours (no gaps), so that "joined" is plain pixel connectivity.
    drawn = draw_images(np.random.default_rng(0), 400, PathfinderConfig(contour_length=length, dash_gap=0))
    parts = components(drawn["images"])
    rows = np.arange(400)
    for k in (0, 1):  # both markers are 3x3 blocks of ink
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                y, x = drawn["markers"][:, k, 0] + dy, drawn["markers"][:, k, 1] + dx
                assert (drawn["images"][rows, y, x] == INK).all()
    a, b = drawn["markers"][:, 0], drawn["markers"][:, 1]
    joined = parts[rows, a[:, 0], a[:, 1]] == parts[rows, b[:, 0], b[:, 1]]
    assert (joined == (drawn["labels"] == 1)).all()


def test_longer_contours_carry_more_ink():
    ink = {}
    for length in (6, 14):
        images = draw_images(np.random.default_rng(0), 50, PathfinderConfig(contour_length=length))
        ink[length] = (images["images"] > 0).sum(axis=(1, 2)).mean()
    assert ink[14] > ink[6] + 20  # 2 x 8 dashes of 2 pixels more; distractors ink about the same


def test_classes_balance_in_every_split(tmp_path):
    task = make(0, tmp_path)
    task.setup()
    for split in ("train", "val", "test"):
        labels = task.splits[split].targets
        assert abs(int(labels.sum()) * 2 - len(labels)) <= 1


def test_shapes_vocabulary_and_pixels(tmp_path):
    task = make(0, tmp_path)
    assert (task.vocab_size, task.num_classes, task.seq_len) == (257, 2, 1024)
    assert task.readout == "classify"
    check_batches(task)
    tokens = next(iter(task.val_dataloader()))["tokens"]
    assert set(tokens.unique().tolist()) == {1, INK + 1}  # black and ink, shifted past padding


def test_splits_are_disjoint(tmp_path):
    check_disjoint(make(0, tmp_path))


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    check_determinism(make, tmp_path)


def write_lra_layout(root, images, labels, files=2):
    """LRA's release: metadata/<i>.npy (text lines '<folder> <png> <i> <label>') + PNGs."""
    Image = pytest.importorskip("PIL.Image")
    (root / "metadata").mkdir(parents=True)
    lines = {i: [] for i in range(files)}
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = f"imgs/{i % files}"
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / folder / f"sample_{i}.png")
        lines[i % files].append(f"{folder} sample_{i}.png {i} {label} 1 0.5\n")
    for i, rows in lines.items():
        (root / "metadata" / f"{i}.npy").write_text("".join(rows))


def test_reads_lras_layout(tmp_path):
    drawn = draw_images(np.random.default_rng(0), 20, PathfinderConfig())
    write_lra_layout(tmp_path / "lra", drawn["images"], drawn["labels"])
    task = PathfinderTask(data_dir=tmp_path / "cache", path=str(tmp_path / "lra"), batch_size=4)
    task.setup()
    assert [len(task.splits[s]) for s in ("train", "val", "test")] == [16, 2, 2]
    read = sorted((t.tobytes(), int(y)) for s in task.splits.values() for t, y in zip(s.tokens, s.targets))
    written = sorted((im.reshape(-1).tobytes(), int(y)) for im, y in zip(drawn["images"], drawn["labels"]))
    assert read == written
    assert list((tmp_path / "cache" / "pathfinder").glob("*/images.npz"))  # decoded once, cached
    check_batches(task)


def test_lra_layout_errors_name_the_file(tmp_path):
    pytest.importorskip("PIL")
    with pytest.raises(ConfigError, match="pathfinder: no metadata/\\*.npy under"):
        PathfinderTask(data_dir=tmp_path, path=str(tmp_path / "nowhere")).setup()
    drawn = draw_images(np.random.default_rng(0), 4, PathfinderConfig())
    root = tmp_path / "lra"
    write_lra_layout(root, drawn["images"], drawn["labels"], files=1)
    meta = root / "metadata" / "0.npy"
    meta.write_text(meta.read_text() + "imgs/0 sample_99.png 99 1\n")
    with pytest.raises(ConfigError, match=f"{meta}:5: missing image {root}/imgs/0/sample_99.png"):
        PathfinderTask(data_dir=tmp_path, path=str(root)).setup()
    meta.write_text("imgs/0 sample_0.png\n")
    with pytest.raises(ConfigError, match=f"{meta}:1: expected '<folder> <file> <n> <label 0/1>'"):
        PathfinderTask(data_dir=tmp_path, path=str(root)).setup()
    meta.write_text("imgs/0 sample_0.png 0 1\n")
    with pytest.raises(ConfigError, match="sample_0.png: image is 32x32, expected resolution 64"):
        PathfinderTask(data_dir=tmp_path, path=str(root), resolution=64).setup()


def test_impossible_geometry_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="contours rarely fit in the image"):
        make(0, tmp_path, resolution=8, contour_length=14).setup()
