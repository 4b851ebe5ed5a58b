"""Accuracy, not only arithmetic: the shipped trained toy model segments the toy world's
validation pictures at least as well as measured when it was made (docs/eval.md, "Accuracy on a
trained model").  A change that breaks the method's accuracy fails here even where every parity
test still passes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from faseg_rt.errors import FASegError

#: mIoU (background + 12 classes) of FA-Seg fp32 with ground-truth candidates and the world's
#: captions on validation pictures 0-19 of the shipped model, measured when the
#: weights were made; the floor leaves 0.02 for float differences between CPUs.
MEASURED_20 = 0.5985
FLOOR_20 = MEASURED_20 - 0.02


@pytest.fixture(scope="module")
def toy_segmenter():
    """The shipped model with no config given: its directory's faseg_config.json is read."""
    from faseg_rt import Segmenter
    from faseg_rt.testing.toy_model import toy_model_dir

    return Segmenter.from_pretrained(toy_model_dir(), device="cpu", dtype=torch.float32)


def test_a_model_directory_carries_its_config(toy_segmenter, tmp_path):
    from faseg_rt.errors import InvalidInputError
    from faseg_rt.model import CONFIG_FILE, model_config
    from faseg_rt.testing.tiny_sd import small_config

    assert toy_segmenter.config == small_config(16) != small_config(64)
    assert model_config(tmp_path) is None                          # no file: the defaults apply
    (tmp_path / CONFIG_FILE).write_text('{"latent_size": "sixteen"}')
    with pytest.raises(InvalidInputError, match=f"{CONFIG_FILE}.*latent_size"):
        model_config(tmp_path)


def test_shipped_weights_match_their_manifest(tmp_path):
    from faseg_rt.testing.toy_model import ASSET, MANIFEST, toy_model_dir

    assert toy_model_dir() == ASSET
    copy = tmp_path / "toy"
    shutil.copytree(ASSET, copy)
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1                                                   # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(FASegError, match="unet/diffusion_pytorch_model.safetensors"):
        toy_model_dir(copy)
    (copy / MANIFEST).unlink()
    with pytest.raises(FASegError, match="remake it with"):
        toy_model_dir(copy)


def test_fa_seg_reaches_the_measured_miou_on_20_validation_pictures(toy_segmenter):
    from faseg_rt.bench.accuracy import _world_samples, variant_table

    samples = _world_samples(20, 128)
    ref = [np.zeros(s.mask.shape, np.int64) for s in samples]       # agreement unused here
    res = variant_table(lambda name: (toy_segmenter, 4), ["fp32"], samples, ref, log=lambda m: None)["fp32"]
    assert res["miou"] >= FLOOR_20, res


def test_ablation_table_full_row_is_what_segment_batch_returns(toy_segmenter):
    """The accuracy benchmark's ablations start from the same scores as a user's call."""
    from faseg_rt.bench.accuracy import _world_samples, method_table, variant_table

    samples = _world_samples(3, 128)
    method, ref = method_table(toy_segmenter, samples, log=lambda m: None)
    res = variant_table(lambda name: (toy_segmenter, 1), ["fp32"], samples, ref["labels"], log=lambda m: None)
    assert res["fp32"]["label_agreement"] == 1.0
    assert res["fp32"]["miou"] == pytest.approx(method["full"]["miou"], abs=1e-12)
    assert method["no HARD (cross-attention only)"]["miou"] != method["full"]["miou"]


def test_every_shipped_model_file_is_package_data():
    """A wheel carries the model: each of its files matches a package-data pattern of pyproject."""
    import fnmatch
    import tomllib
    from pathlib import Path

    from faseg_rt.testing.toy_model import ASSET

    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "faseg_rt.testing"]
    files = [f.relative_to(ASSET.parents[1]).as_posix() for f in ASSET.rglob("*") if f.is_file()]
    assert len(files) >= 10
    missing = [f for f in files if not any(fnmatch.fnmatch(f, p) and f.count("/") == p.count("/") for p in patterns)]
    assert not missing, f"add package-data patterns for {missing}"
