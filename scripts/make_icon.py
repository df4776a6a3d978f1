"""Draw the module/extension icon (128 x 128 PNG) with Pillow: a column of vertebrae in their
anatomy.py colours and the travelling patch box around one of them.

Usage: ``python scripts/make_icon.py`` (writes VertebraTraversal/Resources/Icons/VertebraTraversal.png
and the top-level VertebraTraversal.png; both files are committed).
"""
from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Tuple

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "VertebraTraversal"))
from vertebra_traversal import anatomy  # noqa: E402

SIZE = 128
OUTPUTS = (ROOT / "VertebraTraversal" / "Resources" / "Icons" / "VertebraTraversal.png",
           ROOT / "VertebraTraversal.png")
SHOWN = ("T10", "T11", "T12", "L1", "L2")  # top to bottom
PATCH_AROUND = "L1"
BACKGROUND = (28, 36, 48, 255)
PATCH = (255, 214, 10, 255)


def _rgb(name: str) -> Tuple[int, int, int, int]:
    r, g, b = anatomy.vertebra(name).color
    return int(round(255 * r)), int(round(255 * g)), int(round(255 * b)), 255


def draw() -> Image.Image:
    """The icon: rounded background, five vertebral bodies with spinous processes, the patch box."""
    image = Image.new("RGBA", (SIZE, SIZE), (0, 0, 0, 0))
    pen = ImageDraw.Draw(image)
    pen.rounded_rectangle((0, 0, SIZE - 1, SIZE - 1), radius=22, fill=BACKGROUND)
    step = 21
    top = 14
    for index, name in enumerate(SHOWN):
        y = top + index * step
        pen.rounded_rectangle((40, y, 80, y + 15), radius=5, fill=_rgb(name))  # body
        pen.polygon([(80, y + 4), (100, y + 10), (80, y + 12)], fill=_rgb(name))  # spinous process
        if name == PATCH_AROUND:
            box = (30, y - 7, 108, y + 22)
    pen.rectangle(box, outline=PATCH, width=4)
    return image


def write_atomic(image: Image.Image, path: Path) -> None:
    """PNG bytes to a temporary file in the target folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=path.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(buffer.getvalue())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main() -> int:
    image = draw()
    for path in OUTPUTS:
        write_atomic(image, path)
        sys.stdout.write(f"{path.relative_to(ROOT)} ({SIZE}x{SIZE})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
