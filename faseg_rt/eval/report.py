"""A visual check of an evaluation: a contact sheet of image | ground truth | prediction rows.

Label maps are coloured with the VOC colour map (`faseg_rt.io.color_palette`, 255 = ignore in
cream-white); a legend below the rows names every class that appears in them.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from faseg_rt.io import atomic_path, color_palette, label_colors

_CELL = (160, 120)  # (width, height) of one thumbnail cell
_PAD = 4
_HEADER = 16
_SWATCH = 12


def _fit(im: Image.Image, resample) -> Image.Image:
    w, h = _CELL
    scale = min(w / im.width, h / im.height)
    return im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), resample)


def contact_sheet(rows: Sequence[tuple[str, Image.Image, np.ndarray, np.ndarray]],
                  class_names: Sequence[str]) -> Image.Image:
    """Build the sheet from (id, RGB image, gt labels, predicted labels) rows."""
    present_max = max([255] + [int(max(g.max(initial=0), p.max(initial=0))) for _, _, g, p in rows])
    pal = color_palette(present_max + 1)
    font = ImageFont.load_default()
    present = sorted({int(v) for _, _, g, p in rows for v in np.union1d(np.unique(g), np.unique(p))})
    legend = [(v, class_names[v] if v < len(class_names) else
               ("ignore / no class" if v in (255, 65535) else str(v))) for v in present]
    cw, ch = _CELL
    width = 3 * cw + 4 * _PAD
    per_line = max(1, width // 150)
    legend_h = ((len(legend) + per_line - 1) // per_line) * (_SWATCH + _PAD) + _PAD
    height = _HEADER + len(rows) * (ch + _PAD) + _PAD + legend_h
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(("image", "ground truth", "prediction")):
        draw.text((_PAD + c * (cw + _PAD), 2), title, fill=(0, 0, 0), font=font)
    for r, (image_id, image, gt, pred) in enumerate(rows):
        y = _HEADER + r * (ch + _PAD)
        cells = (_fit(image.convert("RGB"), Image.BILINEAR),
                 _fit(Image.fromarray(label_colors(gt)), Image.NEAREST),
                 _fit(Image.fromarray(label_colors(pred)), Image.NEAREST))
        for c, cell in enumerate(cells):
            sheet.paste(cell, (_PAD + c * (cw + _PAD), y))
        draw.text((_PAD + 2, y + 2), image_id, fill=(255, 255, 0), font=font)
    y0 = _HEADER + len(rows) * (ch + _PAD) + _PAD
    for k, (v, name) in enumerate(legend):
        x = _PAD + (k % per_line) * 150
        y = y0 + (k // per_line) * (_SWATCH + _PAD)
        draw.rectangle([x, y, x + _SWATCH, y + _SWATCH], fill=tuple(int(t) for t in pal[v]),
                       outline=(0, 0, 0))
        draw.text((x + _SWATCH + 4, y), f"{v} {name}", fill=(0, 0, 0), font=font)
    return sheet


def write_report(path: str | os.PathLike,
                 rows: Sequence[tuple[str, Image.Image, np.ndarray, np.ndarray]],
                 class_names: Sequence[str]) -> None:
    """Write the contact sheet as a PNG, atomically."""
    sheet = contact_sheet(rows, class_names)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
