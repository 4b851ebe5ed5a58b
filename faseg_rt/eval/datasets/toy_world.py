"""A synthetic labelled world: pictures of object and "stuff" classes with exact masks and captions.

Each object class is one visual family (a shape and a colour range), so a small diffusion model
trained on the world's captions can learn which words go with which pixels, and FA-Seg's masks
can be scored against exact ground truth.  Deterministic: picture `i` of a split depends only on
(seed, i), so a train set and a validation set are two seeds.

Two kinds of world (ToyWorld.kind):
- "objects": 1-3 of the first six object classes on a textured plain background, captions that
  name every object by its class name (the localisation study's world).
- "scenes": 1-3 of all nine object classes over a background that is plain or made of stuff
  regions (sky over grass or water, or grass or water alone), objects occluding each other and
  the stuff; captions name things by a synonym from the lexicons now and then ("a man and a
  canoe on the lake"), and sometimes miss an object or a region, as real captioners do.

It lives beside the dataset readers (not in faseg_rt/testing) because the `toy` reader (toy.py)
materialises its splits for `faseg-rt eval`, and eval sits below testing in the layering
(docs/architecture.md); the trainer and scorer in faseg_rt/testing import it from here.

    world = ToyWorld(size=128)
    s = world.sample(seed=1, index=7)   # s.image (PIL RGB), s.mask (H, W) uint8, s.classes, s.caption

Mask values: 0 background, k + 1 for NAMES[k]; later objects occlude earlier ones and the stuff.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Object classes (name, shape, base RGB colour): one word each in the test tokenizer
#: (testing/clip_vocab.py).  The "objects" world draws the first OBJECTS_SMALL of them.
CLASSES = (
    ("cat", "disc", (235, 140, 40)),      # orange disc
    ("dog", "square", (120, 75, 35)),     # brown square
    ("car", "triangle", (40, 80, 220)),   # blue triangle
    ("boat", "ellipse", (240, 240, 240)),  # white flat ellipse
    ("bird", "diamond", (240, 220, 40)),  # yellow diamond
    ("tree", "bar", (40, 160, 60)),       # green upright bar
    ("person", "figure", (225, 170, 135)),  # skin-coloured body and head
    ("horse", "slant", (105, 50, 30)),    # dark brown parallelogram (the dog's colour family)
    ("chair", "ell", (130, 60, 150)),     # purple L (seat and back)
)
OBJECTS_SMALL = 6
#: Stuff classes (name, base RGB colour): regions of the scenes world's background.
STUFF = (("sky", (135, 195, 240)), ("grass", (80, 155, 55)), ("water", (35, 95, 165)))
NAMES = tuple(c[0] for c in CLASSES) + tuple(c[0] for c in STUFF)
#: Synonyms a scenes caption may use: words the built-in lexicons list for the class
#: (frontend/lexicons), one token each in the test tokenizer, so the caption route must map them.
SYNONYMS = {"cat": ("kitten",), "dog": ("puppy",), "car": ("van",), "boat": ("ship", "canoe"),
            "bird": ("duck", "swan"), "person": ("man", "woman", "child"), "chair": ("armchair", "stool"),
            "grass": ("field",), "water": ("sea", "lake", "river")}
KINDS = ("objects", "scenes")

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
#: scenes world: how often a caption says a synonym, misses one object (of two or more), and
#: mentions a stuff region that is there
P_SYNONYM, P_MISS_OBJECT, P_SAY_STUFF = 0.3, 0.2, 0.6
_STUFF_PHRASE = {"sky": "under the sky", "grass": "on the {}", "water": "on the {}"}


@dataclass(frozen=True)
class ToySample:
    """One picture: image (PIL RGB, size x size), mask ((size, size) uint8: 0 background,
    k + 1 for NAMES[k]), classes (every class present: those the caption names first, in its
    order, then any it misses), caption, named (the classes the caption names, in its order)."""

    image: object
    mask: np.ndarray
    classes: tuple[str, ...]
    caption: str
    named: tuple[str, ...] = ()


@dataclass(frozen=True)
class ToyWorld:
    """size: picture side in pixels; max_objects: 1..max objects per picture (distinct
    classes); caption_form: one of CAPTION_FORMS; colours: one of COLOUR_MODES; kind: one of
    KINDS (the module docstring)."""

    size: int = 128
    max_objects: int = 3
    caption_form: str = "sentence"
    colours: str = "class"
    kind: str = "scenes"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
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
        mask_np = np.zeros((s, s), np.uint8)
        if self.kind == "scenes":
            _stuff(pixels, mask_np, rng)
        img, mask = Image.fromarray(pixels, "RGB"), Image.fromarray(mask_np, "L")
        n = int(rng.integers(1, self.max_objects + 1))
        picked = rng.choice(OBJECTS_SMALL if self.kind == "objects" else len(CLASSES), size=n, replace=False)
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
        objects = [NAMES[int(k)] for k in picked if (mask_np == int(k) + 1).any()]
        order = [objects[i] for i in rng.permutation(len(objects))]
        if self.kind == "objects":
            phrases = [f"{said[n]} {n}" if n in said else n for n in order]
            return ToySample(img, mask_np, tuple(order), self._caption(phrases, rng), tuple(order))
        return self._scene_sample(img, mask_np, order, said, rng)

    def _scene_sample(self, img, mask: np.ndarray, order: list[str], said: dict, rng) -> ToySample:
        """A scenes picture's caption: objects (a synonym now and then, one of two or more
        missed now and then), then the stuff regions it mentions."""
        stuff = [name for k, (name, _) in enumerate(STUFF) if (mask == len(CLASSES) + k + 1).any()]
        named = list(order)
        if len(named) >= 2 and rng.random() < P_MISS_OBJECT:
            named.pop(int(rng.integers(len(named))))
        words = {n: _word(n, rng) for n in named}
        phrases = [f"{said[n]} {words[n]}" if n in said else words[n] for n in named]
        # ground before sky, as said: "a cat on the grass under the sky"
        regions = sorted((n for n in stuff if rng.random() < P_SAY_STUFF), key="sky".__eq__)
        named += regions
        if self.caption_form == "sentence":
            tail = [_STUFF_PHRASE[n].format(_word(n, rng)) for n in regions]
        else:
            tail = [_word(n, rng) for n in regions]
        caption = self._caption(phrases, rng, tail)
        missed = [n for n in order + stuff if n not in named]
        return ToySample(img, mask, tuple(named + missed), caption, tuple(named))

    def _caption(self, names: list[str], rng, tail: list[str] = ()) -> str:
        """The caption of the object phrases `names` ("cat" or "red cat"), in that order, then
        the words of `tail` ("on the grass")."""
        if self.caption_form == "words":
            return " ".join([*names, *tail])
        objs = [f"a {n}" for n in names]
        text = objs[0] if len(objs) == 1 else ", ".join(objs[:-1]) + " and " + objs[-1]
        return _TEMPLATES[int(rng.integers(len(_TEMPLATES)))].format(" ".join([text, *tail]))


def _word(name: str, rng) -> str:
    """The word a scenes caption names class `name` with: a synonym with P_SYNONYM, if it has any."""
    syn = SYNONYMS.get(name, ())
    if syn and rng.random() < P_SYNONYM:
        return syn[int(rng.integers(len(syn)))]
    return name


def _stuff(pixels: np.ndarray, mask: np.ndarray, rng) -> None:
    """Paint the scenes background in place: plain (a quarter of pictures), sky over grass or
    water along a tilted horizon (half), or grass or water alone; mask gets the stuff ids."""
    s = pixels.shape[0]
    layout = rng.choice(4, p=[0.25, 0.5, 0.125, 0.125])
    if layout == 0:
        return
    ground = 1 + int(rng.integers(2)) if layout == 1 else layout - 1           # 1 grass, 2 water
    rows = np.arange(s)[:, None].astype(np.float64)
    if layout == 1:
        y0, tilt = rng.uniform(0.3, 0.6) * s, rng.uniform(-0.15, 0.15)
        below = rows >= y0 + tilt * (np.arange(s)[None, :] - s / 2)           # (s, s)
    else:
        below = np.ones((s, s), bool)
    noise = rng.normal(0, 1, (s, s, 1))
    sky = np.asarray(STUFF[0][1]) + 40 * (rows[..., None] / s - 0.5) + 5 * noise
    if ground == 1:   # grass: coarse mottling
        tex = np.asarray(STUFF[1][1]) + 22 * noise + 12 * np.sin(np.arange(s)[None, :, None] * 0.9)
    else:             # water: horizontal ripples
        tex = np.asarray(STUFF[2][1]) + 18 * np.sin(rows[..., None] * 1.3 + rng.uniform(0, 6)) + 6 * noise
    jitter = rng.integers(-15, 16, 3)
    if layout == 1:
        pixels[~below] = np.clip(np.broadcast_to(sky, (s, s, 3))[~below] + jitter, 0, 255)
        mask[~below] = len(CLASSES) + 1
    pixels[below] = np.clip(np.broadcast_to(tex, (s, s, 3))[below] + jitter, 0, 255)
    mask[below] = len(CLASSES) + 1 + ground


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
    if shape == "figure":   # body box, then head box: two ellipses
        return [(cx - r * 0.35, cy - r * 0.4, cx + r * 0.35, cy + r * 1.2),
                (cx - r * 0.3, cy - r, cx + r * 0.3, cy - r * 0.4)]
    if shape == "slant":
        return [(cx - r, cy - r * 0.5), (cx + r * 0.6, cy - r * 0.5), (cx + r, cy + r * 0.5),
                (cx - r * 0.6, cy + r * 0.5)]
    if shape == "ell":
        return [(cx - r * 0.7, cy - r), (cx - r * 0.2, cy - r), (cx - r * 0.2, cy + r * 0.1),
                (cx + r * 0.7, cy + r * 0.1), (cx + r * 0.7, cy + r * 0.6), (cx - r * 0.7, cy + r * 0.6)]
    return [cx - r, cy - r, cx + r, cy + r]                       # disc, square


def _draw(d, shape: str, pts, fill) -> None:
    if shape == "figure":
        for box in pts:
            d.ellipse(box, fill=fill)
    elif shape in ("disc", "ellipse"):
        d.ellipse(pts, fill=fill)
    elif shape in ("square", "bar"):
        d.rectangle(pts, fill=fill)
    else:
        d.polygon(pts, fill=fill)
