"""Reading synthetic datasets written in the three real layouts."""

import numpy as np
import pytest
from PIL import Image

from faseg_rt.errors import InvalidInputError
from faseg_rt.eval import open_dataset
from faseg_rt.eval.datasets import coco_object, context, voc
from faseg_rt.testing.datasets import make_coco_object, make_context, make_voc


def test_class_tables():
    for mod, n, thr in ((voc, 21, 0.55), (context, 60, 0.50), (coco_object, 81, 0.60)):
        assert len(mod.CLASSES) == n and len(set(mod.CLASSES)) == n
        assert mod.CLASSES[0] == "background" and mod.THRESHOLD == thr
        for alias, target in mod.ALIASES.items():
            assert target in mod.CLASSES, alias
    # colour -> id is one-to-one over 60 classes + ignore
    assert len(context.COLOR_TO_ID) == 61
    assert sorted(context.COLOR_TO_ID.values()) == list(range(60)) + [255]
    assert coco_object.CLASSES[1] == "person" and coco_object.CLASSES[80] == "toothbrush"
    assert voc.CLASSES[20] == "tv monitor" and context.CLASSES[59] == "wood"


def _check(ds, split, name, n_classes):
    assert ds.name == name and ds.num_classes == n_classes and len(ds) == len(split.ids)
    assert ds.ids == list(split.ids)
    for i in ds.ids:
        gt = ds.load_label(i)
        assert gt.dtype == np.uint8
        np.testing.assert_array_equal(gt, split.labels[i])
        assert ds.image_path(i).exists()
        assert ds.image_size(i) == gt.shape
    assert ds.image_size(ds.ids[0]) != ds.image_size(ds.ids[1])  # both orientations


def test_voc_layout(tmp_path):
    split = make_voc(tmp_path / "VOC2012")
    ds = open_dataset("voc", tmp_path / "VOC2012")
    _check(ds, split, "voc", 21)
    assert ds.default_threshold == 0.55
    assert ds.class_id("tvmonitor") == ds.class_id("TV  Monitor") == 20
    with pytest.raises(KeyError):
        ds.class_id("zebra")


@pytest.mark.parametrize("color", ["rgb", "palette"])
def test_context_layout_colour_and_palette_labels(tmp_path, color):
    split = make_context(tmp_path / "VOC2010", color=color)
    ds = open_dataset("context", tmp_path / "VOC2010")
    mode = Image.open(ds.label_path(ds.ids[0])).mode
    assert mode == ("RGB" if color == "rgb" else "P")
    _check(ds, split, "context", 60)
    assert ds.class_id("compu ter") == context.CLASSES.index("computer")


def test_context_unknown_colour_is_an_error(tmp_path):
    make_context(tmp_path, n_images=1)
    ds = open_dataset("context", tmp_path)
    Image.fromarray(np.full((4, 4, 3), (1, 2, 3), np.uint8)).save(ds.label_path(ds.ids[0]))
    with pytest.raises(InvalidInputError, match=r"\(1, 2, 3\)"):
        ds.load_label(ds.ids[0])


@pytest.mark.parametrize("dirname", ["annotation_object", "annotation_object_p"])
def test_coco_object_layout_both_directory_names(tmp_path, dirname):
    split = make_coco_object(tmp_path / "coco_stuff164k", annotation_dir=dirname)
    ds = open_dataset("coco-object", tmp_path / "coco_stuff164k")
    _check(ds, split, "coco-object", 81)
    assert Image.open(ds.label_path(ds.ids[0])).mode == "L"
    assert ds.label_path(ds.ids[0]).parent.parent.name == dirname


def test_wrong_root_says_where_to_point(tmp_path):
    make_voc(tmp_path / "VOCdevkit" / "VOC2012")
    (tmp_path / "photos").mkdir()  # no VOC anywhere below (VOCdevkit itself is a valid root now)
    with pytest.raises(InvalidInputError, match="VOCdevkit/VOC2012"):
        open_dataset("voc", tmp_path / "photos")
    with pytest.raises(InvalidInputError, match="not a directory"):
        open_dataset("context", tmp_path / "nope")
    with pytest.raises(InvalidInputError, match="annotation_object"):
        (tmp_path / "coco" / "images" / "val2017").mkdir(parents=True)
        open_dataset("coco-object", tmp_path / "coco")
    with pytest.raises(InvalidInputError, match="unknown dataset"):
        open_dataset("ade", tmp_path)


@pytest.mark.parametrize("name, make, levels", [
    ("voc", make_voc, ("VOCdevkit", "VOC2012")),
    ("context", make_context, ("VOCdevkit", "VOC2010")),
    ("coco-object", make_coco_object, ("coco_stuff164k",)),
])
def test_root_is_accepted_at_every_usual_level(tmp_path, name, make, levels):
    """torchvision passes the folder holding VOCdevkit, mmsegmentation configs VOCdevkit/VOC2012:
    every level opens the same split, and the reader says which folder it used."""
    real = tmp_path.joinpath(*levels)
    split = make(real, n_images=2)
    for depth in range(len(levels) + 1):
        given = tmp_path.joinpath(*levels[:depth])
        ds = open_dataset(name, given)
        assert ds.root == real and ds.ids == list(split.ids)
        assert str(real) in ds.root_note and (("found under" in ds.root_note) == (given != real))
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(InvalidInputError, match="or a folder holding"):
        open_dataset(name, tmp_path / "elsewhere")
