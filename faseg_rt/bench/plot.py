"""A small line chart drawn with PIL (no plotting package is a dependency): one line per series."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from faseg_rt.io import atomic_path

COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (0, 0, 0))


def line_plot(series: dict[str, list[tuple[float, float]]], path: str | Path, *, title: str = "",
              xlabel: str = "", ylabel: str = "", size: tuple[int, int] = (900, 560)) -> Path:
    """Write series {name: [(x, y), ...]} as lines with markers and a legend to a PNG."""
    w, h = size
    left, right, top, bottom = 60, 190, 36, 50
    pts = [p for s in series.values() for p in s]
    x1 = max((p[0] for p in pts), default=1.0) or 1.0
    y1 = max((p[1] for p in pts), default=1.0) * 1.1 or 1.0
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)

    def xy(x, y):
        return left + x / x1 * (w - left - right), h - bottom - y / y1 * (h - top - bottom)

    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for i in range(6):
        y = y1 * i / 5
        d.line([xy(0, y), xy(x1, y)], fill=(225, 225, 225))
        d.text((8, xy(0, y)[1] - 6), f"{y:.2f}", fill="black")
        x = x1 * i / 5
        d.text((xy(x, 0)[0] - 10, h - bottom + 6), f"{x:.1f}", fill="black")
    d.text((left, 10), title, fill="black")
    d.text(((w - right) // 2 - 60, h - 22), xlabel, fill="black")
    d.text((8, top - 20), ylabel, fill="black")
    for i, (name, s) in enumerate(series.items()):
        c = COLOURS[i % len(COLOURS)]
        p = [xy(x, y) for x, y in s]
        if len(p) > 1:
            d.line(p, fill=c, width=2)
        for px, py in p:
            d.ellipse([px - 2, py - 2, px + 2, py + 2], fill=c)
        ly = top + 16 * i
        d.line([(w - right + 10, ly + 6), (w - right + 30, ly + 6)], fill=c, width=3)
        d.text((w - right + 36, ly), name, fill="black")
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
