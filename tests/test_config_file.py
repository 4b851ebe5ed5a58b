"""FASegConfig from JSON (`from_dict`, `from_json`, `to_dict`) and the commands' `--config FILE`:
a round trip, string weight keys, and one clear error per kind of bad file (exit 2 on the CLI)."""

import json

import pytest

from faseg_rt.cli import main
from faseg_rt.config import FASegConfig
from faseg_rt.errors import InvalidInputError

SMALL = {"image_size": 64, "latent_size": 8,
         "cross_weights": {"1": 0.15, "2": 0.7, "4": 0.15, "8": 0.0},
         "self_weights": {"1": 0.1, "2": 0.1, "4": 0.5, "8": 0.3}}


def test_from_dict_converts_string_keys_and_keeps_defaults():
    c = FASegConfig.from_dict(SMALL)
    assert (c.image_size, c.latent_size, c.resolutions) == (64, 8, (1, 2, 4, 8))
    assert dict(c.cross_weights) == {1: 0.15, 2: 0.7, 4: 0.15, 8: 0.0}
    assert c.tau == FASegConfig().tau and c.threshold == FASegConfig().threshold
    assert FASegConfig.from_dict({"threshold": 1}).threshold == 1.0   # an int where a float is meant


@pytest.mark.parametrize("config", [FASegConfig(), FASegConfig.from_dict(dict(SMALL, seed=3, tau=3))])
def test_to_dict_round_trips_through_json(config):
    assert FASegConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize("data, msg", [
    ({"image_sise": 64}, r"unknown field\(s\) \['image_sise'\]; known: \["),
    ({"image_size": "64"}, "image_size must be an integer, got '64'"),
    ({"tau": True}, "tau must be an integer, got True"),
    ({"seed": 1.5}, "seed must be an integer, got 1.5"),
    ({"beta_end": "0.012"}, "beta_end must be a number"),
    ({"cross_weights": [0.1, 0.2]}, "cross_weights must be an object resolution -> weight"),
    ({"self_weights": {"eight": 0.1}}, "self_weights maps resolutions .integers. to weights"),
    ({"self_weights": {"8": "0.1"}}, "self_weights maps resolutions"),
    ({"image_size": 64}, "latent_size must be image_size / 8"),
    (dict(SMALL, cross_weights={"1": 1.0}), "cross_weights must have one weight per resolution"),
    ({"threshold": 1.5}, r"threshold must .*\[0, 1\]"),
    ([64, 8], "must be a JSON object of FASegConfig fields, got list"),
])
def test_from_dict_refuses_bad_values_naming_the_field(data, msg):
    with pytest.raises(InvalidInputError, match=msg) as e:
        FASegConfig.from_dict(data, source="small.json")
    assert str(e.value).startswith("small.json") and "\n" not in str(e.value)


def test_from_json_reads_a_file_and_names_it_when_bad(tmp_path):
    good = tmp_path / "small.json"
    good.write_text(json.dumps(SMALL))
    assert FASegConfig.from_json(good) == FASegConfig.from_dict(SMALL)
    with pytest.raises(InvalidInputError, match="config file .*nowhere.json does not exist"):
        FASegConfig.from_json(tmp_path / "nowhere.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"image_size": 64,')
    with pytest.raises(InvalidInputError, match="cannot read config file .*broken.json as JSON"):
        FASegConfig.from_json(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"latent": 8}')
    with pytest.raises(InvalidInputError, match=r"config file .*wrong.json: unknown field\(s\) \['latent'\]"):
        FASegConfig.from_json(wrong)


@pytest.mark.parametrize("command", [
    ["segment", "x.png", "--classes", "cat"],
    ["label", "x.png", "--classes", "cat", "--out", "o"],
    ["eval", "--dataset", "voc", "--root", "r", "--out", "o"],
    ["serve"],
])
def test_a_bad_config_file_exits_2_before_anything_loads(command, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"image_size": "big"}')
    with pytest.raises(SystemExit) as e:
        main([*command, "--config", str(bad)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"argument --config: config file {bad}: image_size must be an integer, "
                            "got 'big'"), err


def test_segment_with_config_runs_that_config(tiny_model_dir, small_segmenter, small_config_file,
                                              tmp_path):
    """The CLI's mask is the 64 px small_segmenter's, not the default 512 px one's."""
    import numpy as np

    from faseg_rt.io import load_label_png
    from faseg_rt.testing import synthetic_image

    img = synthetic_image(40, 30, seed=7)
    img.save(tmp_path / "photo.png")
    rc = main(["segment", str(tmp_path / "photo.png"), "--classes", "cat,sky", "--threshold", "0",
               "--model", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32",
               "--config", str(small_config_file), "--out", str(tmp_path / "out"), "--quiet"])
    assert rc == 0
    want = small_segmenter(img, classes=["cat", "sky"], threshold=0.0).labels
    assert np.array_equal(load_label_png(tmp_path / "out" / "photo.png"), want)
