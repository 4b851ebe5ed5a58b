"""PASCAL Context-459 ("PASCAL Context full"), val split (5105 images): 459 classes.

Layout (`--root` points at `VOCdevkit/VOC2010`, `VOCdevkit`, or the folder holding `VOCdevkit`),
as written by the detectron2-style preparation open-vocabulary papers share:
    JPEGImages/<id>.jpg
    annotations_detectron2/pc459_val/<id>.tif   16-bit TIFF: 0..458 = class ids, 65535 = ignore

The labels are PASCAL Context's 459-category `LabelMap` (1-based, 0 = unlabelled) minus one, so
unlabelled pixels wrap to 65535 in the unsigned 16-bit file. Some preparations declare 459 as
the ignore label instead; a 459 in a label is read as ignore too. The ids are the sorted names
of the label files (the split is the set of images that have a 459-class annotation).

Names are the category names of Context's `labels.txt`, in its order (written as one word, e.g.
"babycarriage", as the benchmark's class list spells them); there is no background class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faseg_rt.eval.datasets.base import SegDataset
from faseg_rt.io import load_label_png

CLASSES: tuple[str, ...] = (
    "accordion", "aeroplane", "airconditioner", "antenna", "artillery", "ashtray", "atrium",
    "babycarriage", "bag", "ball", "balloon", "bambooweaving", "barrel", "baseballbat", "basket",
    "basketballbackboard", "bathtub", "bed", "bedclothes", "beer", "bell", "bench", "bicycle",
    "binoculars", "bird", "birdcage", "birdfeeder", "birdnest", "blackboard", "board", "boat",
    "bone", "book", "bottle", "bottleopener", "bowl", "box", "bracelet", "brick", "bridge",
    "broom", "brush", "bucket", "building", "bus", "cabinet", "cabinetdoor", "cage", "cake",
    "calculator", "calendar", "camel", "camera", "cameralens", "can", "candle", "candleholder",
    "cap", "car", "card", "cart", "case", "casetterecorder", "cashregister", "cat", "cd",
    "cdplayer", "ceiling", "cellphone", "cello", "chain", "chair", "chessboard", "chicken",
    "chopstick", "clip", "clippers", "clock", "closet", "cloth", "clothestree", "coffee",
    "coffeemachine", "comb", "computer", "concrete", "cone", "container", "controlbooth",
    "controller", "cooker", "copyingmachine", "coral", "cork", "corkscrew", "counter", "court",
    "cow", "crabstick", "crane", "crate", "cross", "crutch", "cup", "curtain", "cushion",
    "cuttingboard", "dais", "disc", "disccase", "dishwasher", "dock", "dog", "dolphin", "door",
    "drainer", "dray", "drinkdispenser", "drinkingmachine", "drop", "drug", "drum", "drumkit",
    "duck", "dumbbell", "earphone", "earrings", "egg", "electricfan", "electriciron",
    "electricpot", "electricsaw", "electronickeyboard", "engine", "envelope", "equipment",
    "escalator", "exhibitionbooth", "extinguisher", "eyeglass", "fan", "faucet", "faxmachine",
    "fence", "ferriswheel", "fireextinguisher", "firehydrant", "fireplace", "fish", "fishtank",
    "fishbowl", "fishingnet", "fishingpole", "flag", "flagstaff", "flame", "flashlight", "floor",
    "flower", "fly", "foam", "food", "footbridge", "forceps", "fork", "forklift", "fountain",
    "fox", "frame", "fridge", "frog", "fruit", "funnel", "furnace", "gamecontroller",
    "gamemachine", "gascylinder", "gashood", "gasstove", "giftbox", "glass", "glassmarble",
    "globe", "glove", "goal", "grandstand", "grass", "gravestone", "ground", "guardrail", "guitar",
    "gun", "hammer", "handcart", "handle", "handrail", "hanger", "harddiskdrive", "hat", "hay",
    "headphone", "heater", "helicopter", "helmet", "holder", "hook", "horse",
    "horse-drawncarriage", "hot-airballoon", "hydrovalve", "ice", "inflatorpump", "ipod", "iron",
    "ironingboard", "jar", "kart", "kettle", "key", "keyboard", "kitchenrange", "kite", "knife",
    "knifeblock", "ladder", "laddertruck", "ladle", "laptop", "leaves", "lid", "lifebuoy", "light",
    "lightbulb", "lighter", "line", "lion", "lobster", "lock", "machine", "mailbox", "mannequin",
    "map", "mask", "mat", "matchbook", "mattress", "menu", "metal", "meterbox", "microphone",
    "microwave", "mirror", "missile", "model", "money", "monkey", "mop", "motorbike", "mountain",
    "mouse", "mousepad", "musicalinstrument", "napkin", "net", "newspaper", "oar", "ornament",
    "outlet", "oven", "oxygenbottle", "pack", "pan", "paper", "paperbox", "papercutter",
    "parachute", "parasol", "parterre", "patio", "pelage", "pen", "pencontainer", "pencil",
    "person", "photo", "piano", "picture", "pig", "pillar", "pillow", "pipe", "pitcher", "plant",
    "plastic", "plate", "platform", "player", "playground", "pliers", "plume", "poker",
    "pokerchip", "pole", "pooltable", "postcard", "poster", "pot", "pottedplant", "printer",
    "projector", "pumpkin", "rabbit", "racket", "radiator", "radio", "rail", "rake", "ramp",
    "rangehood", "receiver", "recorder", "recreationalmachines", "remotecontrol", "road", "robot",
    "rock", "rocket", "rockinghorse", "rope", "rug", "ruler", "runway", "saddle", "sand", "saw",
    "scale", "scanner", "scissors", "scoop", "screen", "screwdriver", "sculpture", "scythe",
    "sewer", "sewingmachine", "shed", "sheep", "shell", "shelves", "shoe", "shoppingcart",
    "shovel", "sidecar", "sidewalk", "sign", "signallight", "sink", "skateboard", "ski", "sky",
    "sled", "slippers", "smoke", "snail", "snake", "snow", "snowmobiles", "sofa", "spanner",
    "spatula", "speaker", "speedbump", "spicecontainer", "spoon", "sprayer", "squirrel", "stage",
    "stair", "stapler", "stick", "stickynote", "stone", "stool", "stove", "straw", "stretcher",
    "sun", "sunglass", "sunshade", "surveillancecamera", "swan", "sweeper", "swimring",
    "swimmingpool", "swing", "switch", "table", "tableware", "tank", "tap", "tape", "tarp",
    "telephone", "telephonebooth", "tent", "tire", "toaster", "toilet", "tong", "tool",
    "toothbrush", "towel", "toy", "toycar", "track", "train", "trampoline", "trashbin", "tray",
    "tree", "tricycle", "tripod", "trophy", "truck", "tube", "turtle", "tvmonitor", "tweezers",
    "typewriter", "umbrella", "unknown", "vacuumcleaner", "vendingmachine", "videocamera",
    "videogameconsole", "videoplayer", "videotape", "violin", "wakeboard", "wall", "wallet",
    "wardrobe", "washingmachine", "watch", "water", "waterdispenser", "waterpipe",
    "waterskateboard", "watermelon", "whale", "wharf", "wheel", "wheelchair", "window",
    "windowblinds", "wineglass", "wire", "wood", "wool",
)

# Spellings of the same objects in the 59-class list and in VOC candidate strings.
ALIASES: dict[str, str] = {
    "tv monitor": "tvmonitor", "potted plant": "pottedplant", "air conditioner": "airconditioner",
    "baby carriage": "babycarriage", "cell phone": "cellphone",
    "fire hydrant": "firehydrant", "swimming pool": "swimmingpool", "wine glass": "wineglass",
    "trash bin": "trashbin", "bed clothes": "bedclothes", "shopping cart": "shoppingcart",
}

IMAGE_DIR = Path("JPEGImages")
LABEL_DIR = Path("annotations_detectron2/pc459_val")
ALT_IGNORE = 459


class PascalContext459(SegDataset):
    """Reader for PASCAL Context-459 val (16-bit TIFF ground truth, 65535 = ignore)."""

    name = "context459"
    class_names = CLASSES
    background = False
    ignore_index = 65535
    default_threshold = 0.0
    aliases = ALIASES
    root_hint = "VOCdevkit/VOC2010 (holding JPEGImages and annotations_detectron2/pc459_val)"
    root_marker = str(LABEL_DIR)
    root_levels = ("VOC2010", "VOCdevkit/VOC2010")

    def _read_ids(self) -> list[str]:
        self._require(self.root / IMAGE_DIR, self.root / LABEL_DIR)
        return sorted(p.stem for p in (self.root / LABEL_DIR).glob("*.tif"))

    def image_path(self, image_id: str) -> Path:
        return self.root / IMAGE_DIR / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        return self.root / LABEL_DIR / f"{image_id}.tif"

    def load_label(self, image_id: str) -> np.ndarray:
        lab = load_label_png(self.label_path(image_id))
        return np.where(lab == ALT_IGNORE, self.ignore_index, lab).astype(np.uint16)
