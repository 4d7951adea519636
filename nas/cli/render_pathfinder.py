"""`nas-render-pathfinder`: render Pathfinder images as a PNG grid, positives (markers joined)
above negatives, so that a person can check the task is what it claims. Generated images by
default (the options of `task=pathfinder`); LRA's released images with --path.

    nas-render-pathfinder --out pathfinder.png --contour-length 14
    nas-render-pathfinder --out lra.png --path lra_release/pathfinder32/curv_baseline
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from nas.cli.common import fail, one_line_errors
from nas.errors import ConfigError
from nas.tasks import build
from nas.tasks.pathfinder import PathfinderConfig, draw_images

GAP = 4  # pixels between tiles, after scaling
LABEL_WIDTH = 110  # room for the row captions


def sample_images(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, R, R), labels (N,)): 4 * per_class generated ones, or LRA's from --path."""
    if args.path is None:
        try:
            config = PathfinderConfig(contour_length=args.contour_length, resolution=args.resolution)
        except ValueError as err:  # the config's own range checks
            raise ConfigError(f"pathfinder: {err}") from None
        drawn = draw_images(np.random.default_rng(args.seed), 4 * args.per_class, config)
        return drawn["images"], drawn["labels"]
    with tempfile.TemporaryDirectory() as cache:
        task = build("pathfinder", data_dir=cache, path=args.path, resolution=args.resolution)
        task.setup()
        data = task.splits["train"]
        return data.tokens.reshape(-1, args.resolution, args.resolution), data.targets


def grid(images: np.ndarray, labels: np.ndarray, per_class: int, scale: int) -> Image.Image:
    """Two captioned rows of `per_class` tiles, each image scaled `scale` times."""
    size = images.shape[1] * scale
    rows = [("joined (1)", images[labels == 1][:per_class]), ("not joined (0)", images[labels == 0][:per_class])]
    width = LABEL_WIDTH + per_class * (size + GAP)
    canvas = Image.new("L", (width, 2 * (size + GAP) + GAP), color=96)
    draw = ImageDraw.Draw(canvas)
    for r, (caption, tiles) in enumerate(rows):
        top = GAP + r * (size + GAP)
        draw.text((6, top + size // 2 - 6), caption, fill=255)
        for c, tile in enumerate(tiles):
            big = Image.fromarray(tile).resize((size, size), Image.NEAREST)
            canvas.paste(big, (LABEL_WIDTH + c * (size + GAP), top))
    return canvas


@one_line_errors("nas-render-pathfinder")
def run(args: argparse.Namespace) -> None:
    for option in ("per_class", "scale"):
        if getattr(args, option) < 1:
            raise ConfigError(f"--{option.replace('_', '-')}={getattr(args, option)}: must be at least 1")
    if Path(args.out).suffix.lower() not in Image.registered_extensions():
        raise ConfigError(f"--out={args.out}: not an image file name (e.g. pathfinder.png)")
    images, labels = sample_images(args)
    grid(images, labels, args.per_class, args.scale).save(args.out)
    print(f"wrote {args.out}: {args.per_class} positives above {args.per_class} negatives")


def main(argv: list[str] | None = None) -> None:
    doc = __doc__.split("\n\n")
    what = doc[0].split(": ", 1)[1]
    parser = argparse.ArgumentParser(
        prog="nas-render-pathfinder",
        description=what[0].upper() + what[1:],
        epilog=f"examples:\n{doc[1]}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="pathfinder.png", help="PNG file to write (default: %(default)s)")
    parser.add_argument("--contour-length", type=int, default=6, help="dashes per contour (default: %(default)s)")
    parser.add_argument("--resolution", type=int, default=32, help="image side in pixels (default: %(default)s)")
    parser.add_argument("--per-class", type=int, default=8, help="images per row (default: %(default)s)")
    parser.add_argument("--scale", type=int, default=4, help="pixels per image pixel (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated images (default: %(default)s)")
    parser.add_argument(
        "--path", default=None, help="LRA's folder for one difficulty, to render its images instead of generated ones"
    )
    parser.error = lambda message: fail("nas-render-pathfinder", message)  # one line, not usage + error
    run(parser.parse_args(argv))


if __name__ == "__main__":  # `python -m nas.cli.render_pathfinder`
    main()
