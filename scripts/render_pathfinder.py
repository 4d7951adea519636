"""Render Pathfinder images as a PNG grid, positives (markers joined) above negatives, so that a
person can check the task is what it claims. Generated images by default; LRA's with --path.

    python scripts/render_pathfinder.py --out pathfinder.png --contour-length 14
    python scripts/render_pathfinder.py --out lra.png --path lra_release/pathfinder32/curv_baseline
"""
import argparse
import tempfile

import numpy as np
from PIL import Image, ImageDraw

from nas.tasks.pathfinder import PathfinderConfig, PathfinderTask, draw_images

GAP = 4  # pixels between tiles, after scaling
LABEL_WIDTH = 110  # room for the row captions


def sample_images(args) -> tuple[np.ndarray, np.ndarray]:
    if args.path is None:
        config = PathfinderConfig(contour_length=args.contour_length, resolution=args.resolution)
        drawn = draw_images(np.random.default_rng(args.seed), 4 * args.per_class, config)
        return drawn["images"], drawn["labels"]
    with tempfile.TemporaryDirectory() as cache:
        task = PathfinderTask(data_dir=cache, path=args.path, resolution=args.resolution)
        task.setup()
        data = task.splits["train"]
        return data.tokens.reshape(-1, args.resolution, args.resolution), data.targets


def grid(images: np.ndarray, labels: np.ndarray, per_class: int, scale: int) -> Image.Image:
    size = images.shape[1] * scale
    rows = [("joined (1)", images[labels == 1][:per_class]),
            ("not joined (0)", images[labels == 0][:per_class])]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="pathfinder.png", help="PNG file to write")
    parser.add_argument("--contour-length", type=int, default=6, help="dashes per contour")
    parser.add_argument("--resolution", type=int, default=32, help="image side in pixels")
    parser.add_argument("--per-class", type=int, default=8, help="images per row")
    parser.add_argument("--scale", type=int, default=4, help="pixels per image pixel")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--path", default=None, help="LRA's folder for one difficulty, to render "
                                                     "its images instead of generated ones")
    args = parser.parse_args()
    images, labels = sample_images(args)
    grid(images, labels, args.per_class, args.scale).save(args.out)
    print(f"wrote {args.out}: {args.per_class} positives above {args.per_class} negatives")


if __name__ == "__main__":
    main()
