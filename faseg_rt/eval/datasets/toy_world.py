"""A synthetic labelled world: pictures of a few object classes with exact masks and captions.

Each class is one visual family (a shape and a colour range), so a small diffusion model trained
on the world's captions can learn which words go with which pixels, and FA-Seg's masks can be
scored against exact ground truth.  Deterministic: picture `i` of a split depends only on
(seed, i), so a train set and a validation set are two seeds.

It lives beside the dataset readers (not in faseg_rt/testing) because the `toy` reader (toy.py)
materialises its splits for `faseg-rt eval`, and eval sits below testing in the layering
(docs/architecture.md); the trainer and scorer in faseg_rt/testing import it from here.

    world = ToyWorld(size=128)
    s = world.sample(seed=1, index=7)   # s.image (PIL RGB), s.mask (H, W) uint8, s.classes, s.caption

Mask values: 0 background, k + 1 for CLASSES[k]; later objects occlude earlier ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: (name, shape, base RGB colour): one word each in the test tokenizer (testing/clip_vocab.py).
CLASSES = (
    ("cat", "disc", (235, 140, 40)),      # orange disc
    ("dog", "square", (120, 75, 35)),     # brown square
    ("car", "triangle", (40, 80, 220)),   # blue triangle
    ("boat", "ellipse", (240, 240, 240)),  # white flat ellipse
    ("bird", "diamond", (240, 220, 40)),  # yellow diamond
    ("tree", "bar", (40, 160, 60)),       # green upright bar
)
NAMES = tuple(c[0] for c in CLASSES)

#: Caption forms: "sentence" ("a photo of a cat and a dog"), "words" ("cat dog").
CAPTION_FORMS = ("sentence", "words")
#: Colour modes: "class" (each class its own colour family, as CLASSES says) or "named" (each
#: object one of PALETTE's colours, named in the caption before its class: "a red cat"; the
#: class is then its shape alone).  Named colours make the caption's words matter per object:
#: where the disc is, the denoiser needs the colour said next to "cat", so cross-attention
#: pays for finding "cat" there instead of reading the caption as one bag of words.
COLOUR_MODES = ("class", "named")
PALETTE = (("red", (220, 40, 40)), ("green", (40, 170, 60)), ("blue", (40, 80, 220)),
           ("yellow", (240, 220, 40)), ("white", (240, 240, 240)), ("black", (25, 25, 25)),
           ("purple", (140, 60, 180)), ("pink", (240, 140, 190)))
_TEMPLATES = ("a photo of {}", "a picture of {}", "{} in a picture", "an image with {}")


@dataclass(frozen=True)
class ToySample:
    """One picture: image (PIL RGB, size x size), mask ((size, size) uint8: 0 background,
    k + 1 for NAMES[k]), classes (present, in caption order), caption."""

    image: object
    mask: np.ndarray
    classes: tuple[str, ...]
    caption: str


@dataclass(frozen=True)
class ToyWorld:
    """size: picture side in pixels; max_objects: 1..max objects per picture (distinct
    classes); caption_form: one of CAPTION_FORMS; colours: one of COLOUR_MODES."""

    size: int = 128
    max_objects: int = 3
    caption_form: str = "sentence"
    colours: str = "class"

    def __post_init__(self):
        if self.caption_form not in CAPTION_FORMS:
            raise ValueError(f"caption_form must be one of {', '.join(CAPTION_FORMS)}, not {self.caption_form!r}")
        if self.colours not in COLOUR_MODES:
            raise ValueError(f"colours must be one of {', '.join(COLOUR_MODES)}, not {self.colours!r}")

    def sample(self, seed: int, index: int) -> ToySample:
        """Picture `index` of the split drawn with `seed`."""
        from PIL import Image, ImageDraw

        rng = np.random.default_rng([seed, index])
        s = self.size
        bg = rng.integers(60, 200, 3)
        pixels = np.clip(bg + rng.normal(0, 12, (s, s, 3)), 0, 255).astype(np.uint8)  # textured plain
        img = Image.fromarray(pixels, "RGB")
        mask = Image.new("L", (s, s), 0)
        n = int(rng.integers(1, self.max_objects + 1))
        picked = rng.choice(len(CLASSES), size=n, replace=False)
        said = {}
        for k in picked:
            name, shape, colour = CLASSES[int(k)]
            poly = _shape(shape, rng, s)
            if self.colours == "named":
                said[name], colour = PALETTE[int(rng.integers(len(PALETTE)))]
            c = tuple(int(v) for v in np.clip(np.asarray(colour) + rng.integers(-25, 26, 3), 0, 255))
            _draw(ImageDraw.Draw(img), shape, poly, c)
            _draw(ImageDraw.Draw(mask), shape, poly, int(k) + 1)
        mask_np = np.asarray(mask, dtype=np.uint8).copy()
        present = [NAMES[int(k)] for k in picked if (mask_np == int(k) + 1).any()]
        order = [present[i] for i in rng.permutation(len(present))]
        phrases = [f"{said[n]} {n}" if n in said else n for n in order]
        return ToySample(img, mask_np, tuple(order), self._caption(phrases, rng))

    def _caption(self, names: list[str], rng) -> str:
        """The caption of the object phrases `names` ("cat" or "red cat"), in that order."""
        if self.caption_form == "words":
            return " ".join(names)
        objs = [f"a {n}" for n in names]
        text = objs[0] if len(objs) == 1 else ", ".join(objs[:-1]) + " and " + objs[-1]
        return _TEMPLATES[int(rng.integers(len(_TEMPLATES)))].format(text)


def _shape(shape: str, rng, s: int) -> list:
    """The bounding points of one object: a box [x0, y0, x1, y1] or a polygon."""
    r = float(rng.uniform(0.12, 0.24)) * s                      # half-size
    cx, cy = (float(v) for v in rng.uniform(r, s - r, 2))
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.7, cy), (cx, cy + r), (cx - r * 0.7, cy)]
    if shape == "ellipse":
        return [cx - r * 1.3, cy - r * 0.45, cx + r * 1.3, cy + r * 0.45]
    if shape == "bar":
        return [cx - r * 0.35, cy - r * 1.3, cx + r * 0.35, cy + r * 1.3]
    return [cx - r, cy - r, cx + r, cy + r]                       # disc, square


def _draw(d, shape: str, pts, fill) -> None:
    if shape in ("disc", "ellipse"):
        d.ellipse(pts, fill=fill)
    elif shape in ("square", "bar"):
        d.rectangle(pts, fill=fill)
    else:
        d.polygon(pts, fill=fill)
