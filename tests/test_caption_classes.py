"""The classes a caption names (`classes_in_caption`), user lexicons, and the presence measurement
of caption-named candidates against per-image ground-truth class lists."""

import json
from pathlib import Path

import pytest

import faseg_rt.frontend

from faseg_rt.cli.main import main
from faseg_rt.errors import InvalidInputError
from faseg_rt.eval.caption_presence import caption_presence, dataset_vocabulary, parse_class_lists
from faseg_rt.eval.datasets.registry import READERS
from faseg_rt.frontend import classes_in_caption, load_lexicon
from faseg_rt.frontend.caption_classes import name_phrases
from faseg_rt.frontend.caption_text import key
from faseg_rt.frontend.lexicon import families
from faseg_rt.frontend.inflect import number_forms, plurals, singulars

VOC, _ = dataset_vocabulary("voc")
CONTEXT, _ = dataset_vocabulary("context")
COCO, _ = dataset_vocabulary("coco-object")
STUFF, _ = dataset_vocabulary("coco-stuff")
ADE, _ = dataset_vocabulary("ade150")
CTX459, _ = dataset_vocabulary("context459")


def test_inflection_rules():
    assert plurals("bus") == ("buses", "busses")
    assert plurals("knife") == ("knives",) and plurals("person") == ("people", "persons")
    assert plurals("bench") == ("benches",) and plurals("toy") == ("toys",)
    assert plurals("strawberry") == ("strawberries",)
    assert "shelf" in singulars("shelves") and singulars("skis") == ("ski",)
    assert singulars("glass") == () and singulars("bus") == ()
    assert number_forms("wine glass") == ("wine glasses",)
    assert number_forms("glass") == ()  # "glasses" alone is eyewear, not drinking glasses


@pytest.mark.parametrize("caption, vocab, expected", [
    ("three people and two women", VOC, ["person"]),
    ("children feeding geese", VOC, ["person", "bird"]),
    ("two buses and some sheep", VOC, ["bus", "sheep"]),
    ("forks and knives next to two mice", COCO, ["fork", "knife", "mouse"]),
    ("a shelf of books", CONTEXT, ["shelves", "book"]),
    ("a man on his skis", STUFF, ["person", "skis"]),
])
def test_singular_and_plural_forms(caption, vocab, expected):
    assert classes_in_caption(caption, vocab) == expected


def test_multi_word_and_compact_names():
    assert classes_in_caption("potted plants by the dining table and a tv monitor", VOC) == [
        "potted plant", "dining table", "tv monitor"]
    compact = ["tvmonitor", "pottedplant", "diningtable"]
    assert classes_in_caption("a tv monitor, potted plants and a dining table", compact) == [
        "tvmonitor", "pottedplant", "diningtable"]
    assert classes_in_caption("a tvmonitor", VOC) == ["tv monitor"]
    assert classes_in_caption("two traffic lights and wine glasses", COCO) == [
        "traffic light", "wine glass"]
    assert classes_in_caption("a stroller under hot air balloons", CTX459) == [
        "babycarriage", "hot-airballoon"]


def test_coco_stuff_separators():
    assert name_phrases("wall-brick") == ["wall brick", "brick wall", "wallbrick"]
    assert name_phrases("sky-other")[:2] == ["sky other", "sky"]
    assert classes_in_caption("a wall under the sky", STUFF) == ["wall-other", "sky-other"]
    # the longer "brick wall" names the brick wall only, not also "wall-other"
    assert classes_in_caption("a brick wall", STUFF) == ["wall-brick"]
    assert classes_in_caption("a wooden floor", STUFF) == ["floor-wood"]
    assert classes_in_caption("a cat on the mat / rug", ["cat", "mat/rug"]) == ["cat", "mat/rug"]


@pytest.mark.parametrize("caption", ["a catalog in a cart", "scattered cartons", "a dogma",
                                     "a busboy at a stopover", "a carpet"])
def test_word_boundaries(caption):
    assert classes_in_caption(caption, ["cat", "car", "dog", "bus stop"]) == []
    assert classes_in_caption("a bus-stop", ["bus stop"]) == ["bus stop"]


@pytest.mark.parametrize("vocab, caption, expected", [
    (VOC, "a plane, a bike and a puppy by the couch near a television", [
        "aeroplane", "bicycle", "dog", "sofa", "tv monitor"]),
    (VOC, "a kitten and a motorcycle", ["cat", "motorbike"]),
    (COCO, "a fridge, a sofa, doughnuts and a television", [
        "refrigerator", "couch", "donut", "tv"]),
    (CONTEXT, "a street under clouds next to a lawn", ["road", "sky", "grass"]),
    (ADE, "a window, a tv and a trash can", ["windowpane", "television receiver", "ashcan"]),
    (STUFF, "a man holding an umbrella on the beach by the ocean", [
        "person", "umbrella", "sand", "sea"]),
])
def test_synonyms_per_dataset_family(vocab, caption, expected):
    assert classes_in_caption(caption, vocab) == expected


def test_order_of_first_mention_without_repeats():
    vocab = ["car", "cat", "dog"]
    assert classes_in_caption("a dog chasing a cat past a car and another dog", vocab) == [
        "dog", "cat", "car"]


def test_negated_phrases_name_nothing():
    assert classes_in_caption("an empty street with no cars and no people", CONTEXT) == ["road"]
    assert classes_in_caption("a room without chairs, a no parking sign", CONTEXT) == ["sign"]
    assert classes_in_caption("a couple of cows", VOC) == ["cow"]
    assert classes_in_caption("a couple walking a dog", VOC) == ["person", "dog"]


def test_one_word_can_name_two_classes():
    assert classes_in_caption("a cyclist on the road", VOC) == ["bicycle", "person"]
    lex = {"cat": ["pets"], "dog": ["pets"]}
    assert classes_in_caption("our pets", ["dog", "cat"], lexicon=lex) == ["dog", "cat"]


def test_blip_artefacts_name_nothing():
    vocab = ["giraffe", "person", "dog"]
    assert classes_in_caption("araffe standing next to arafed arafly arrafed things", vocab) == []
    # a user's words win over the built-in rule: BLIP meant the giraffe
    assert classes_in_caption("araffe", vocab, lexicon={"giraffe": ["araffe"]}) == ["giraffe"]
    assert classes_in_caption("arafed dog", vocab) == ["dog"]


def test_longest_match_and_own_names_win():
    assert classes_in_caption("a fire hydrant", ["fire", "fire hydrant"]) == ["fire hydrant"]
    assert classes_in_caption("a fire near a hydrant", ["fire", "fire hydrant"]) == [
        "fire", "fire hydrant"]
    assert classes_in_caption("a dining table", ["table", "dining table"]) == ["dining table"]
    assert classes_in_caption("a dining table", CONTEXT) == ["table"]
    # COCO-Stuff lists "desk" under "desk-stuff" (compact key "deskstuff", no class of Context);
    # where "desk" is a class of its own (ADE) it names that alone
    assert classes_in_caption("a desk", CONTEXT) == []
    assert classes_in_caption("a desk", ADE) == ["desk"]
    assert classes_in_caption("a desk", ["table", "desk"], lexicon={"table": ["desk"]}) == ["desk"]


def test_user_lexicon_extends_and_checks_classes():
    assert classes_in_caption("a gizmo", VOC) == []
    assert classes_in_caption("two gizmos", VOC, lexicon={"tv monitor": ["gizmo"]}) == [
        "tv monitor"]
    assert classes_in_caption("a gizmo", ["tvmonitor"], lexicon={"tv monitor": "gizmo"}) == [
        "tvmonitor"]
    assert classes_in_caption("a couch", VOC, lexicon={"sofa": ["chesterfield"]}) == ["sofa"]
    # a key outside the vocabulary is ignored: one lexicon serves many vocabularies
    assert classes_in_caption("a zebra and a dog", VOC, lexicon={"zebra": ["zebra"]}) == ["dog"]
    for bad in ([1, 2], 3, None):
        with pytest.raises(InvalidInputError, match="list of words"):
            classes_in_caption("a cat", VOC, lexicon={"cat": bad})


def test_every_family_holds_its_datasets_classes_and_lists_only_those():
    """`_classes` of each lexicon file is its datasets' classes (the scope rule reads it), and
    every class a file lists words for is one of them."""
    readers = {r.name: r for r in READERS}
    files = {f.name: f for f in families()}
    assert set(files) == {"voc", "context", "coco", "ade"}
    for fam in files.values():
        data = json.loads((Path(faseg_rt.frontend.__file__).parent / "lexicons"
                           / f"{fam.name}.json").read_text())
        names = {key(n) for d in data["_datasets"] for n in readers[d].class_names} - {"background"}
        assert {key(n) for n in data["_classes"]} == names
        assert set(fam.words) <= names, sorted(set(fam.words) - names)


def test_load_lexicon_json_and_yaml(tmp_path):
    p = tmp_path / "lex.json"
    p.write_text(json.dumps({"dog": ["hound dog", "mutt"], "cat": "moggy"}))
    assert load_lexicon(p) == {"dog": ["hound dog", "mutt"], "cat": ["moggy"]}
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: YAML lexicons untested")
    y = tmp_path / "lex.yaml"
    y.write_text(yaml.safe_dump({"dog": ["mutt"]}))
    assert load_lexicon(y) == {"dog": ["mutt"]}


@pytest.mark.parametrize("name, text, message", [
    ("empty.json", "  \n", "is empty"),
    ("list.json", '["dog"]', "must hold a non-empty mapping"),
    ("bad.json", "{dog: ", "is not valid JSON"),
    ("nums.json", '{"dog": [1]}', "must be a list of words"),
    ("bad.yaml", "dog: [mutt", "is not valid YAML"),
])
def test_bad_lexicon_files_are_one_clear_error(tmp_path, name, text, message):
    p = tmp_path / name
    p.write_text(text)
    if name.endswith(".yaml"):
        pytest.importorskip("yaml", reason="PyYAML is not installed: YAML lexicons untested")
    with pytest.raises(InvalidInputError, match=message) as e:
        load_lexicon(p)
    assert "\n" not in str(e.value)
    with pytest.raises(InvalidInputError, match="cannot be read"):
        load_lexicon(tmp_path / "missing.json")


# A hand-made captions / ground-truth / published triple (VOC names; GT in devkit spelling).
CAPTIONS = {"a": "a man riding a bike", "b": "a cat on a couch", "c": "a plane in the sky",
            "d": "a television on a table"}
TRUTH = {"a": "person bicycle car", "b": "cat", "c": "aeroplane", "d": "tvmonitor diningtable"}
PUBLISHED = {"a": "person", "b": "cat dog", "c": "", "d": "tv monitor"}
# caption route: kept 2+2+1+2 = 7, correct 2+1+1+2 = 6, true 3+1+1+2 = 7
# published:     kept 1+2+0+1 = 4, correct 1+1+0+1 = 3
# union:         kept 2+3+1+2 = 8, correct 2+1+1+2 = 6
EXPECTED = {"caption": (0.8571, 0.8571, 1.75), "published": (0.75, 0.4286, 1.0),
            "union": (0.75, 0.8571, 2.0)}


def test_caption_presence_by_hand():
    classes, aliases = dataset_vocabulary("voc")
    truth, unknown = parse_class_lists(TRUTH, classes, aliases)
    assert unknown == set() and truth["d"] == ("tv monitor", "dining table")
    published, _ = parse_class_lists(PUBLISHED, classes, aliases)
    got = caption_presence(CAPTIONS, truth, classes, published)
    for source, (p, r, mean) in EXPECTED.items():
        s = got[source]
        assert (s["precision"], s["recall"], s["mean_candidates"], s["images"]) == (p, r, mean, 4)
    assert set(caption_presence(CAPTIONS, truth, classes)) == {"caption"}


def test_eval_candidates_command(tmp_path, capsys):
    files = {}
    truth = dict(TRUTH, e="cow")  # an image without a caption is left out of every source
    for name, data in (("captions", CAPTIONS), ("gt", truth), ("published", PUBLISHED)):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(data))
    out = tmp_path / "presence.json"
    rc = main(["eval-candidates", "--dataset", "voc", "--captions", str(files["captions"]),
               "--groundtruth", str(files["gt"]), "--published", str(files["published"]),
               "--json", str(out)])
    assert rc == 0
    printed, err = capsys.readouterr()
    assert "1 of the 5 ground-truth images have no caption" in err
    assert "| voc | caption | 0.857 | 0.857 | 1.750 | 4 |" in printed
    assert "| voc | union | 0.750 | 0.857 | 2.000 | 4 |" in printed
    assert json.loads(out.read_text())["voc"]["published"]["recall"] == 0.4286

    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    rc = main(["eval-candidates", "--dataset", "voc", "--captions", str(files["captions"]),
               "--groundtruth", str(files["gt"]), "--lexicon", str(empty), "--json",
               str(tmp_path / "not-written.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "is empty" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "not-written.json").exists()


def test_eval_candidates_refuses_swapped_files(tmp_path, capsys):
    """Captions given as the ground truth (and class lists as the captions) once scored as given
    and exited 0 with meaningless numbers; now one line says they look swapped."""
    files = {}
    for name, data in (("captions", CAPTIONS), ("gt", TRUTH)):
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(data))
    out = tmp_path / "presence.json"

    def run(captions, truth):
        rc = main(["eval-candidates", "--dataset", "voc", "--captions", str(captions),
                   "--groundtruth", str(truth), "--json", str(out)])
        printed, err = capsys.readouterr()
        return rc, printed, err.strip().splitlines()

    rc, printed, err = run(files["gt"], files["captions"])
    assert rc == 2 and len(err) == 1 and "look swapped" in err[0] and printed == ""
    assert "'a', 'man', 'riding'" in err[0] and not out.exists()
    rc, _, err = run(files["captions"], files["captions"])  # no class lists anywhere
    assert rc == 2 and len(err) == 1 and "does not hold class lists" in err[0]
    assert "swapped" not in err[0] and not out.exists()
    assert run(files["captions"], files["gt"])[0] == 0 and out.exists()  # the right way round
