"""The open-vocabulary benchmark readers (ADE20K-150/-847, PASCAL Context-459, COCO-Stuff-171)
on synthetic data written in each benchmark's own layout, at each accepted root level."""

import numpy as np
import pytest

from faseg_rt.errors import InvalidInputError
from faseg_rt.eval import open_dataset
from faseg_rt.eval.datasets import ade20k, ade20k_full, coco_stuff, context459
from faseg_rt.testing.datasets_openvocab import (make_ade150, make_ade847, make_coco_stuff,
                                                        make_context459)
from faseg_rt.method.prompts import build_dual_prompts


def test_class_tables(tokenizer):
    for mod, n in ((ade20k, 150), (ade20k_full, 847), (context459, 459), (coco_stuff, 171)):
        assert len(mod.CLASSES) == n
        assert len({c.lower() for c in mod.CLASSES}) == n, "names must be distinct prompts"
        for alias, target in mod.ALIASES.items():
            assert target in mod.CLASSES, alias
        # every vocabulary is a valid FA-Seg class list: distinct names that keep their tokens
        with pytest.warns(UserWarning, match="the full prompt is"):   # P itself is truncated
            assert build_dual_prompts(tokenizer, mod.CLASSES).num_classes == n
    assert ade20k.CLASSES[0] == "wall" and ade20k.CLASSES[149] == "flag"
    assert ade20k_full.CLASSES[:3] == ("wall", "building", "sky")
    assert ade20k_full.ALIASES["edifice"] == "building"
    # a first synonym shared by several entries: the bare entry keeps it, the others get another
    assert "pot" in ade20k_full.CLASSES and "flowerpot" in ade20k_full.CLASSES
    assert {"bag", "traveling bag", "handbag"} <= set(ade20k_full.CLASSES)
    assert context459.CLASSES[0] == "accordion" and context459.CLASSES[458] == "wool"
    assert coco_stuff.CLASSES[0] == "person" and coco_stuff.CLASSES[80] == "banner"
    assert coco_stuff.CLASSES[170] == "wood"
    # released COCO-Stuff maps: COCO id - 1 -> train id (things, then stuff); gaps are unmapped
    assert coco_stuff.RAW_TO_TRAIN[0] == 0 and coco_stuff.RAW_TO_TRAIN[12] == 11  # stop sign
    assert coco_stuff.RAW_TO_TRAIN[91] == 80 and coco_stuff.RAW_TO_TRAIN[181] == 170
    assert coco_stuff.RAW_TO_TRAIN[11] == coco_stuff.UNMAPPED and coco_stuff.RAW_TO_TRAIN[255] == 255


def _check(ds, split, name, n_classes, dtype):
    assert ds.name == name and ds.num_classes == n_classes and ds.ids == list(split.ids)
    assert not ds.background and ds.default_threshold == 0.0
    for i in ds.ids:
        gt = ds.load_label(i)
        assert gt.dtype == dtype
        np.testing.assert_array_equal(gt, split.labels[i])
        assert ds.image_size(i) == gt.shape
        assert set(np.unique(gt)) <= set(range(n_classes)) | {ds.ignore_index}


@pytest.mark.parametrize("level", ["", "ADEChallengeData2016"])
@pytest.mark.parametrize("form", ["raw", "reduced"])
def test_ade150_layouts(tmp_path, level, form):
    split = make_ade150(tmp_path / "ADEChallengeData2016", form=form)
    ds = open_dataset("ade150", tmp_path / level)
    _check(ds, split, "ade150", 150, np.uint8)
    assert ds.ignore_index == 255 and ds.class_id("window") == ds.class_id("windowpane") == 8


def test_ade150_reduce_zero_label():
    raw = np.array([[0, 1, 150]], dtype=np.uint8)
    assert ade20k.reduce_zero_label(raw).tolist() == [[255, 0, 149]]
    with pytest.raises(InvalidInputError, match="outside"):
        ade20k.reduce_zero_label(np.array([[151]], dtype=np.uint8))


@pytest.mark.parametrize("level", ["", "ADE20K_2021_17_01"])
def test_ade847_sixteen_bit_tiffs(tmp_path, level):
    split = make_ade847(tmp_path / "ADE20K_2021_17_01")
    assert max(int(v.max(initial=0, where=v != 65535)) for v in split.labels.values()) > 255
    ds = open_dataset("ade847", tmp_path / level)
    _check(ds, split, "ade847", 847, np.uint16)
    assert ds.ignore_index == 65535 and ds.class_id("Edifice") == 1


@pytest.mark.parametrize("level", ["", "VOCdevkit", "VOCdevkit/VOC2010"])
def test_context459_layout_and_alternative_ignore(tmp_path, level):
    split = make_context459(tmp_path / "VOCdevkit/VOC2010")
    ds = open_dataset("context459", tmp_path / level)
    _check(ds, split, "context459", 459, np.uint16)
    assert ds.class_id("tv monitor") == context459.CLASSES.index("tvmonitor")
    # a preparation that wrote 459 for "unlabelled" is read as ignore
    from PIL import Image
    Image.fromarray(np.array([[459, 3]], dtype=np.uint16)).save(ds.label_path(ds.ids[0]))
    assert ds.load_label(ds.ids[0]).tolist() == [[65535, 3]]


@pytest.mark.parametrize("form", ["raw", "trainids", "detectron2"])
@pytest.mark.parametrize("level", ["", "coco_stuff164k"])
def test_coco_stuff_label_forms(tmp_path, form, level):
    split = make_coco_stuff(tmp_path / "coco_stuff164k", form=form)
    ds = open_dataset("coco-stuff", tmp_path / level)
    _check(ds, split, "coco-stuff", 171, np.uint8)


def test_coco_stuff_unmapped_raw_value_is_an_error(tmp_path):
    from PIL import Image
    make_coco_stuff(tmp_path, n_images=1)
    ds = open_dataset("coco-stuff", tmp_path)
    Image.fromarray(np.array([[11]], dtype=np.uint8)).save(ds.label_path(ds.ids[0]))
    with pytest.raises(InvalidInputError, match="no COCO-Stuff category"):
        ds.load_label(ds.ids[0])


@pytest.mark.parametrize("name", ["ade150", "ade847", "context459", "coco-stuff"])
def test_missing_layout_names_the_expected_root(tmp_path, name):
    with pytest.raises(InvalidInputError, match="root"):
        open_dataset(name, tmp_path)
