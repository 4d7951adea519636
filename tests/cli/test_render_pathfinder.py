"""`nas-render-pathfinder`: positives above negatives, each tile the image scaled up; bad input is
one line."""

import numpy as np
import pytest
from PIL import Image

from nas.cli import render_pathfinder
from nas.cli.render_pathfinder import GAP, LABEL_WIDTH
from nas.tasks.pathfinder import PathfinderConfig, draw_images
from tests.tasks.test_pathfinder import write_lra_layout


def tiles(png, per_class: int, size: int) -> list[list[np.ndarray]]:
    """The grid's two rows of tiles, read back from the PNG."""
    pixels = np.asarray(Image.open(png))
    return [
        [pixels[GAP + r * (size + GAP) :][:size, LABEL_WIDTH + c * (size + GAP) :][:, :size] for c in range(per_class)]
        for r in range(2)
    ]


def scaled(image: np.ndarray, scale: int) -> np.ndarray:
    return np.kron(image, np.ones((scale, scale), dtype=image.dtype))


def test_generated_images_joined_above_not_joined(tmp_path, capsys):
    out = tmp_path / "grid.png"
    render_pathfinder.main(
        [
            "--out",
            str(out),
            "--per-class",
            "3",
            "--resolution",
            "24",
            "--scale",
            "2",
            "--contour-length",
            "4",
            "--seed",
            "5",
        ]
    )
    assert "3 positives above 3 negatives" in capsys.readouterr().out
    assert Image.open(out).size == (LABEL_WIDTH + 3 * (48 + GAP), 2 * (48 + GAP) + GAP)
    drawn = draw_images(np.random.default_rng(5), 12, PathfinderConfig(resolution=24, contour_length=4))
    for row, label in zip(tiles(out, 3, 48), (1, 0)):
        expected = drawn["images"][drawn["labels"] == label][:3]
        assert len(expected) == 3 and all(np.array_equal(t, scaled(e, 2)) for t, e in zip(row, expected))


def test_lras_images_by_their_labels(tmp_path):
    drawn = draw_images(np.random.default_rng(0), 20, PathfinderConfig())
    write_lra_layout(tmp_path / "lra", drawn["images"], drawn["labels"])
    out = tmp_path / "lra.png"
    render_pathfinder.main(["--out", str(out), "--per-class", "2", "--scale", "1", "--path", str(tmp_path / "lra")])
    for row, label in zip(tiles(out, 2, 32), (1, 0)):
        ours = {im.tobytes() for im in drawn["images"][drawn["labels"] == label]}
        assert all(tile.tobytes() in ours for tile in row)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scale", "0"], "--scale=0: must be at least 1"),
        (["--per-class", "0"], "--per-class=0: must be at least 1"),
        (["--resolution", "4"], "resolution must be >= 8"),
        (["--out", "{tmp}/grid.txt"], "not an image file name"),
        (["--out", "{tmp}/missing/grid.png", "--per-class", "1"], "missing"),
        (["--path", "{tmp}/nowhere"], "no metadata/*.npy under"),
        (["--contour-length", "x"], "argument --contour-length: invalid int value"),
    ],
)
def test_bad_input_is_one_line(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        render_pathfinder.main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert stop.value.code == 1 and err.count("\n") == 1
    assert err.startswith("nas-render-pathfinder: error: ") and message in err
