"""Shared fixtures: one tiny random SD 1.5-shaped model per session, loaded once per use.

Expensive reference computations are cached per session (`parity_cases`), so several tests can
assert different things about the same runs.
"""

from __future__ import annotations

import os
import tempfile
import warnings

import pytest
import torch

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the engines' sha256 cache (faseg_rt.engines.file_hash) goes to a directory of this run, not ~/.cache
os.environ["FASEG_RT_CACHE_DIR"] = os.path.join(tempfile.mkdtemp(prefix="faseg_rt_test_cache_"), "cache")
warnings.filterwarnings("ignore", message=".*accelerate.*")
# the count the commands pick (faseg_rt/threads.py: affinity, cgroup quota, OMP_NUM_THREADS), so a
# command run in-process computes at the same count as the session's fixtures it is compared with
from faseg_rt.threads import apply as _apply_thread_policy  # noqa: E402

_apply_thread_policy()


#: Fixtures that run the literal fp32 / fp64 oracle (dense 4096 x 4096 matrices): a test that needs
#: one is in the slow tier, which CI runs; `pytest -m "not slow"` is the fast tier (README).
ORACLE_FIXTURES = {"reference32", "reference64", "parity_cases"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if ORACLE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from faseg_rt.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd15")


@pytest.fixture(scope="session")
def frontend_dirs(tmp_path_factory):
    """Tiny random BLIP, SigLIP, SigLIP 2 and CLIP checkpoints:
    {"blip", "siglip", "siglip2" (NaFlex), "siglip2-fixres", "clip"} -> dir."""
    from faseg_rt.testing.tiny_frontend import build_tiny_frontend

    return build_tiny_frontend(tmp_path_factory.mktemp("frontend"))


@pytest.fixture(scope="session")
def segmenter(tiny_model_dir):
    from faseg_rt import Segmenter

    return Segmenter.from_pretrained(tiny_model_dir, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from faseg_rt.model import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def _reference(model_dir, dtype):
    from faseg_rt.method.reference import ReferenceFASeg
    from faseg_rt.model import load_modules, load_tokenizer

    vae, te, unet = load_modules(model_dir)
    mods = [m.to(dtype) for m in (vae, te, unet)]
    return ReferenceFASeg(*mods, load_tokenizer(model_dir))


@pytest.fixture(scope="session")
def reference32(tiny_model_dir):
    return _reference(tiny_model_dir, torch.float32)


@pytest.fixture(scope="session")
def reference64(tiny_model_dir):
    return _reference(tiny_model_dir, torch.float64)


# (image seed, width, height, classes, caption): odd sizes exercise the final nearest resize.
from faseg_rt.testing import PARITY_CASES  # noqa: E402
# the small config the tiny model runs at (a subprocess in test_reliability_longrun imports it from here)
from faseg_rt.testing import small_config, write_small_config  # noqa: E402


@pytest.fixture(scope="session")
def fast_cases(segmenter):
    """For each of PARITY_CASES: the image, classes, caption and the Segmenter's result (cheap;
    tests that need only an image and its fast result use this, and stay in the fast tier)."""
    from faseg_rt.testing import synthetic_image

    out = []
    for seed, w, h, classes, caption in PARITY_CASES:
        img = synthetic_image(w, h, seed=seed)
        out.append(dict(image=img, classes=classes, caption=caption,
                        fast=segmenter(img, classes=classes, caption=caption)))
    return out


@pytest.fixture(scope="session")
def parity_cases(fast_cases, reference32, reference64):
    """fast_cases with the fp32 / fp64 reference outputs of each (the literal oracle: slow tier)."""
    return [dict(c, ref32=reference32(c["image"], c["classes"], c["caption"]),
                 ref64=reference64(c["image"], c["classes"], c["caption"])) for c in fast_cases]


@pytest.fixture(scope="session")
def small_config_file(tmp_path_factory):
    """--config FILE of the 64 px small_config (what small_segmenter runs)."""
    return write_small_config(tmp_path_factory.mktemp("config") / "small.json")


@pytest.fixture(scope="session")
def small_segmenter(tiny_model_dir):
    """The tiny model at a 64 px input (8 x 8 latents): same code paths, ~50x cheaper per call."""
    from faseg_rt import Segmenter

    return Segmenter.from_pretrained(tiny_model_dir, device="cpu", dtype=torch.float32,
                                     config=small_config())


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """Two small photos of different sizes: a.png (96 x 64) and b.png (50 x 70)."""
    from faseg_rt.testing import synthetic_image

    d = tmp_path_factory.mktemp("photos")
    synthetic_image(96, 64, seed=4).save(d / "a.png")
    synthetic_image(50, 70, seed=5).save(d / "b.png")
    return d


@pytest.fixture(scope="session")
def auto_segmenter(small_segmenter, frontend_dirs):
    """The 64 px model with the tiny front end (BLIP, SigLIP), keeping classes scoring >= 0.3."""
    from faseg_rt import Segmenter
    from faseg_rt.frontend import Captioner, Recognizer
    from faseg_rt.frontend.plan import FrontEnd

    front = FrontEnd(Captioner.from_pretrained(frontend_dirs["blip"], device="cpu"),
                     Recognizer.from_pretrained(frontend_dirs["siglip"], device="cpu"),
                     candidate_threshold=0.3)
    return Segmenter(small_segmenter.backend, small_segmenter.tokenizer, small_segmenter.config,
                     frontend=front)


@pytest.fixture(scope="session")
def bf16_segmenter(tiny_model_dir):
    """The tiny model under the bfloat16 precision policy (faseg_rt.precision), 512 px input."""
    from faseg_rt import Segmenter

    return Segmenter.from_pretrained(tiny_model_dir, device="cpu", dtype=torch.bfloat16)


@pytest.fixture(scope="session")
def small_bf16_segmenter(tiny_model_dir):
    """small_segmenter under the bfloat16 precision policy."""
    from faseg_rt import Segmenter

    return Segmenter.from_pretrained(tiny_model_dir, device="cpu", dtype=torch.bfloat16,
                                     config=small_config())


@pytest.fixture
def one_thread(monkeypatch):
    """Run the test with torch on one thread (byte-identical results need a fixed thread count);
    a command run in-process picks 1 as well (the thread policy reads OMP_NUM_THREADS)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def keep_threads():
    """Restore torch's thread count and the thread policy's record after a test that applies it."""
    from faseg_rt import threads

    before, record = torch.get_num_threads(), threads.last_applied
    yield
    torch.set_num_threads(before)
    threads.last_applied = record
