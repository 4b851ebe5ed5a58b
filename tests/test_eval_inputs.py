"""Parsing the published candidate strings and the JSON input files."""

import json

import pytest

from faseg_rt.errors import InvalidInputError
from faseg_rt.eval.datasets import coco_object, context, voc
from faseg_rt.eval.inputs import (
    build_vocabulary,
    split_candidate_string,
    read_id_string_json,
    resolve_candidates,
    resolve_captions,
)

VOC = build_vocabulary(voc.CLASSES[1:], voc.ALIASES)
CTX = build_vocabulary(context.CLASSES[1:], context.ALIASES)
COCO = build_vocabulary(coco_object.CLASSES[1:], coco_object.ALIASES)

COCO_MULTI = ["traffic light", "fire hydrant", "hair drier", "stop sign", "parking meter",
              "sports ball", "baseball bat", "baseball glove", "tennis racket", "wine glass",
              "hot dog", "potted plant", "dining table", "cell phone", "teddy bear"]


def test_voc_multi_word_names_stay_together():
    known, unknown = split_candidate_string("person dining table potted plant tv monitor cat", VOC)
    assert known == ("person", "dining table", "potted plant", "tv monitor", "cat")
    assert unknown == ()


def test_context_longest_match_and_respellings():
    assert split_candidate_string("tv monitor potted plant table", CTX) == (
        ("tv monitor", "potted plant", "table"), ())
    # "dining table" is not a Context class: "dining" is unknown, "table" is the class
    assert split_candidate_string("dining table", CTX) == (("table",), ("dining",))
    assert split_candidate_string("bed clothes compu ter aerop lane bed", CTX)[0] == (
        "bedclothes", "computer", "aeroplane", "bed")


def test_all_fifteen_coco_multi_word_names():
    assert sum(" " in n for n in coco_object.CLASSES) == 15
    known, unknown = split_candidate_string(" ".join(COCO_MULTI), COCO)
    assert known == tuple(COCO_MULTI) and unknown == ()
    assert split_candidate_string("hot dog dog tv cell phone", COCO)[0] == ("hot dog", "dog", "tv",
                                                                      "cell phone")
    assert split_candidate_string("fire hydr ant surf board", COCO)[0] == ("fire hydrant", "surfboard")


def test_unknown_case_punctuation_duplicates_and_empty():
    assert split_candidate_string("Cat, DOG zebra cat zebra", VOC) == (("cat", "dog"), ("zebra",))
    assert split_candidate_string("", VOC) == ((), ())
    assert split_candidate_string("   ", VOC) == ((), ())
    assert split_candidate_string("tvmonitor diningtable", VOC)[0] == ("tv monitor", "dining table")


def test_resolve_candidates_defaults_missing_ids_and_one_warning():
    ids = ["a", "b", "c"]
    all_, unknown = resolve_candidates(None, ids, voc.CLASSES, voc.ALIASES)
    assert all_["a"] == voc.CLASSES[1:] and unknown == {}
    raw = {"a": "cat unicorn", "b": "unicorn dragon dog"}
    with pytest.warns(UserWarning, match="unicorn") as rec:
        got, unknown = resolve_candidates(raw, ids, voc.CLASSES, voc.ALIASES)
    assert len(rec) == 1
    assert got == {"a": ("cat",), "b": ("dog",), "c": ()}
    assert unknown == {"unicorn": 2, "dragon": 1}


def test_json_files(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"2007_000033.jpg": "cat", "x/2007_000042": "dog", "n": None}))
    assert read_id_string_json(p, "candidates") == {"2007_000033": "cat", "2007_000042": "dog",
                                                    "n": ""}
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        read_id_string_json(tmp_path / "bad.json", "captions")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(InvalidInputError, match="object"):
        read_id_string_json(tmp_path / "list.json", "captions")
    with pytest.raises(InvalidInputError, match="not found"):
        read_id_string_json(tmp_path / "missing.json", "captions")
    assert resolve_captions({"a": " a cat ", "b": ""}, ["a", "b", "c"]) == {
        "a": "a cat", "b": None, "c": None}
    assert resolve_captions(None, ["a"]) == {"a": None}
