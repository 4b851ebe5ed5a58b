"""Export stage and the onnxruntime / tensorrt backends, on the tiny random model.

One ONNX export of the tiny model per module (`engines_dir`, ~70 s on 2 CPU cores); every
mutation test works on a shutil.copytree of it.  Parity: onnxruntime fp32 vs the torch fp32
Segmenter (the session's `parity_cases` results) on 2 small images: labels >= 99.9 % equal,
scores max abs diff <= 1e-3.  TensorRT needs CUDA: here its build and backend must refuse at once
with a clear message, and the real engine test skips with the reason "no CUDA GPU".
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from faseg_rt import Segmenter
from faseg_rt.engines import build as ex
from faseg_rt.engines import onnx_export
from faseg_rt.engines.graphs import graph_specs
from faseg_rt.engines.manifest import GRAPHS, MANIFEST, dims_from_json, model_fingerprint, verify_manifest
from faseg_rt.engines.versions import package_version, same_release
from faseg_rt.errors import BackendUnavailableError, EngineError, EngineMismatchError, InvalidInputError

pytestmark = pytest.mark.slow  # ONNX export and ONNX Runtime checks of four graphs: the slow tier (CI runs it)

ROOT = Path(__file__).resolve().parent.parent
HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def engines_dir(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("engines") / "tiny"
    lines: list[str] = []
    ex.build(tiny_model_dir, out, onnx_only=True, log=lines.append)
    return out, lines


def _copy(engines_dir, tmp_path) -> Path:
    dst = tmp_path / "engines"
    shutil.copytree(engines_dir[0], dst)
    return dst


def _leftovers(d: Path) -> list[str]:
    return [p.name for p in d.iterdir() if p.name.startswith(".") or p.name.endswith((".tmp", ".partial"))]


# --------------------------------------------------------------------------- the export
def test_manifest_records_graphs_versions_and_errors(engines_dir, tiny_model_dir):
    import onnx

    out, lines = engines_dir
    man = json.loads((out / MANIFEST).read_text())
    assert man["model"]["sha256"] == model_fingerprint(tiny_model_dir)["sha256"]
    assert man["model"]["id"] == str(tiny_model_dir)
    assert man["engines"] is None and man["build_args"]["onnx_only"] is True
    for pkg in ("torch", "diffusers", "onnx", "onnxruntime"):
        assert man["versions"][pkg], pkg
    # recorded from package metadata, the same release as the imported module whatever the label
    assert man["versions"]["torch"] == package_version("torch")
    assert same_release(man["versions"]["torch"], torch.__version__)
    specs = graph_specs(dims_from_json(man["dims"]))
    assert set(man["graphs"]) == set(GRAPHS)
    for name in GRAPHS:
        g = man["graphs"][name]
        assert [t["name"] for t in g["inputs"]] == specs[name].input_names
        assert [t["name"] for t in g["outputs"]] == specs[name].output_names
        assert g["opset"] == ex.DEFAULT_OPSET
        for o in specs[name].output_names:
            assert 0 <= g["check"]["max_abs_error"][o] <= g["check"]["tolerance"][o] < 1e-2
        proto = onnx.load(str(out / g["file"]), load_external_data=False)
        onnx.checker.check_model(str(out / g["file"]))
        first = proto.graph.input[0].type.tensor_type.shape.dim[0]
        assert first.dim_param in ("N", "P"), f"{name}: batch axis is not dynamic"
        # structure checks (engines/onnx_checks.py) ran in the build and found nothing wrong
        st = g["structure"]
        assert st["unknown_dims"] == 0 and st["decomposed"] == 0, (name, st)
        assert st["attention"]["fused"] == st["attention"]["layers"], (name, st)
        if name.startswith("unet"):
            assert st["attention"]["layers"] >= 16 and st["layernorm"] >= 3 * 8
    # CLIP's causal mask holds float32's minimum: one reason the text encoder stays fp32
    assert man["graphs"]["text_encoder"]["structure"]["beyond_fp16_range"]
    assert man["graphs_fp16"] is None
    # exactly what HARD needs: no (4096 x 4096) self-attention output
    s = man["dims"]["latent_size"]
    outs = {t["name"]: t["shape"] for t in man["graphs"]["unet_attn"]["outputs"]}
    assert f"self_{s}" not in outs and outs[f"q_{s}"][2] == s * s
    assert any("all done in" in ln for ln in lines) and any("check against PyTorch" in ln for ln in lines)
    assert _leftovers(out) == []


def test_rerun_is_up_to_date(engines_dir, tiny_model_dir):
    out, _ = engines_dir
    before = (out / MANIFEST).read_bytes()
    lines: list[str] = []
    ex.build(tiny_model_dir, out, onnx_only=True, log=lines.append)  # nothing exported again:
    assert sum("up to date" in ln for ln in lines) == len(GRAPHS) + 1, lines
    assert not any(": export ..." in ln for ln in lines)
    assert (out / MANIFEST).read_bytes() == before


# --------------------------------------------------------------------------- parity
def test_onnxruntime_matches_torch(engines_dir, tiny_model_dir, parity_cases):
    seg = Segmenter.from_pretrained(tiny_model_dir, backend="onnxruntime", engines=engines_dir[0],
                                    device="cpu", dtype=torch.float32)
    assert seg.backend.name == "onnxruntime"
    with pytest.raises(InvalidInputError, match="cannot move"):
        seg.to("cpu", torch.float64)
    for c in parity_cases:
        got = seg(c["image"], classes=c["classes"], caption=c["caption"])
        ref = c["fast"]  # the torch fp32 Segmenter on the same image
        assert got.labels.shape == ref.labels.shape and got.scores.shape == ref.scores.shape
        assert float((got.labels == ref.labels).mean()) >= 0.999
        assert float(np.abs(got.scores - ref.scores).max()) <= 1e-3
        assert len(np.unique(got.labels)) >= 3  # not a degenerate all-one-label answer


def test_onnxruntime_backend_honours_or_refuses_a_segmenters_config(engines_dir, tiny_model_dir, parity_cases):
    """The default export skips the class-aware maps the default config weighs by 0 (64) and
    computes the others, so any fusion weights over 8-32 are honoured (scores match torch loaded
    with that config); a config that weighs 64, or another latent size, is refused."""
    import dataclasses

    from faseg_rt.config import FASegConfig
    from faseg_rt.testing import small_config

    rs = FASegConfig().resolutions
    cfg = dataclasses.replace(FASegConfig(), cross_weights=dict(zip(rs, (0.3, 0.4, 0.3, 0.0))))
    ort = Segmenter.from_pretrained(tiny_model_dir, backend="onnxruntime", engines=engines_dir[0],
                                    device="cpu", dtype=torch.float32)
    assert ort.backend.skip_cross == (64,) and ort.backend.manifest["build_args"]["skip_cross"] == [64]
    torch_cfg = Segmenter.from_pretrained(tiny_model_dir, device="cpu", dtype=torch.float32, config=cfg)
    c = parity_cases[0]
    got = Segmenter(ort.backend, ort.tokenizer, cfg)(c["image"], classes=c["classes"], caption=c["caption"])
    want = torch_cfg(c["image"], classes=c["classes"], caption=c["caption"])
    assert float(np.abs(got.scores - want.scores).max()) <= 1e-3
    assert float(np.abs(got.scores - c["fast"].scores).max()) > 1e-2  # the weights matter
    weighs_64 = dataclasses.replace(FASegConfig(), cross_weights=dict(zip(rs, (0.15, 0.5, 0.15, 0.2))))
    with pytest.raises(InvalidInputError, match=r"\[64\].*--skip-cross none"):
        Segmenter(ort.backend, ort.tokenizer, weighs_64)
    with pytest.raises(InvalidInputError, match="latent size 64.*asks for 8"):
        Segmenter(ort.backend, ort.tokenizer, small_config())


def _assert_same_masks(got, ref):
    """Exported vs torch masks at one vocabulary: scores within 2e-3, and a label may differ only
    where the torch scores' top two are closer than twice the largest score difference (a near
    tie the two runtimes' float rounding can flip; measured here: 0.3 % of pixels, all such)."""
    diff = float(np.abs(got.scores - ref.scores).max())
    assert diff <= 2e-3
    top2 = np.sort(ref.scores, axis=0)[-2:]
    margin = top2[1] - top2[0]
    differ = got.labels != ref.labels
    assert float(differ.mean()) <= 0.01
    assert not differ.any() or float(margin[differ].max()) <= 2 * diff


def _large_vocab_parity(seg, ref_seg):
    from faseg_rt.bench.vocab import large_vocabulary
    from faseg_rt.testing import synthetic_image

    image = synthetic_image(512, 512, seed=1)  # labels at the scores' resolution
    for k in (150, 300):  # 6 and 12 class-prompt chunks: over the export's 4 per graph call
        classes = list(large_vocabulary()[:k])
        got = seg(image, classes=classes, return_scores=True)
        ref = ref_seg(image, classes=classes, return_scores=True)
        assert got.scores.shape == (k, 512, 512)
        _assert_same_masks(got, ref)


# long prompts are the subject here; test_prompts asserts the warning
@pytest.mark.filterwarnings("ignore:the full prompt is:UserWarning")
def test_onnxruntime_large_vocabularies_match_torch(engines_dir, tiny_model_dir, segmenter):
    seg = Segmenter.from_pretrained(tiny_model_dir, backend="onnxruntime", engines=engines_dir[0],
                                    device="cpu", dtype=torch.float32)
    assert seg.backend.unet_attn.max_chunks == 4  # the manifest's max_class_chunks
    _large_vocab_parity(seg, segmenter)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU")
def test_tensorrt_large_vocabularies_match_torch(engines_dir, tiny_model_dir, tmp_path):
    """The engines' profiles take 5 prompts and 4 chunks: 150 and 300 classes go in pieces."""
    pytest.importorskip("tensorrt", reason="tensorrt not installed (pip install -e '.[tensorrt]')")
    d = _copy(engines_dir, tmp_path)
    ex.build(tiny_model_dir, d, batch_sizes="1,2", log=print)
    seg = Segmenter.from_pretrained(tiny_model_dir, backend="tensorrt", engines=d, device="cuda",
                                    dtype=torch.float32)
    assert seg.backend.max_prompts == 5 and seg.backend.max_latents == 4
    _large_vocab_parity(seg, Segmenter.from_pretrained(tiny_model_dir, device="cuda", dtype=torch.float32))


# --------------------------------------------------------------------------- refusals
def test_refuses_other_model(engines_dir, tiny_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    w = other / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(w)
    key = sorted(state)[0]
    state[key] = state[key] + 0.01
    save_file(state, w)
    with pytest.raises(EngineMismatchError) as e:
        Segmenter.from_pretrained(other, backend="onnxruntime", engines=engines_dir[0], device="cpu")
    msg = str(e.value)
    assert "model: built from" in msg and "unet/diffusion_pytorch_model.safetensors" in msg
    assert f"python export/build_engines.py --model {other} --out {engines_dir[0]}" in msg
    assert "--force" in msg


def test_refuses_edited_version(engines_dir, tiny_model_dir, tmp_path):
    d = _copy(engines_dir, tmp_path)
    man = json.loads((d / MANIFEST).read_text())
    man["versions"]["torch"] = "1.0.0"
    (d / MANIFEST).write_text(json.dumps(man))
    with pytest.raises(EngineMismatchError) as e:
        verify_manifest(d, tiny_model_dir, "onnxruntime")
    assert f"torch: built with 1.0.0, installed {package_version('torch')}" in str(e.value)
    assert "python export/build_engines.py" in str(e.value)


def test_refuses_missing_and_corrupted_files(engines_dir, tiny_model_dir, tmp_path):
    d = _copy(engines_dir, tmp_path)
    (d / "unet.onnx").unlink()
    data = (d / "unet_attn.onnx").read_bytes()
    (d / "unet_attn.onnx").write_bytes(data[: len(data) // 2])  # a truncated copy
    with pytest.raises(EngineMismatchError) as e:
        Segmenter.from_pretrained(tiny_model_dir, backend="onnxruntime", engines=d, device="cpu")
    msg = str(e.value)
    assert "unet.onnx is missing" in msg and "unet_attn.onnx is corrupted" in msg
    assert "--onnx-only --force" in msg


def test_refuses_missing_or_broken_manifest(engines_dir, tiny_model_dir, tmp_path):
    d = _copy(engines_dir, tmp_path)
    (d / MANIFEST).write_text('{"format": 1, "model": ')
    with pytest.raises(EngineError, match="not readable JSON"):
        verify_manifest(d, tiny_model_dir, "onnxruntime")
    (d / MANIFEST).unlink()
    with pytest.raises(EngineError, match="manifest.json is missing: the export into .* did not finish"):
        Segmenter.from_pretrained(tiny_model_dir, backend="onnxruntime", engines=d, device="cpu")
    with pytest.raises(EngineError, match="pass engines=DIR"):
        Segmenter.from_pretrained(tiny_model_dir, backend="onnxruntime", device="cpu")


# --------------------------------------------------------------------------- interrupted builds
def _interrupt_at(monkeypatch, graph: str, calls: list):
    real = ex.check_onnx

    def check(module, spec, dims, path, sizes=None):
        calls.append(spec.name)
        if spec.name == graph:
            raise KeyboardInterrupt
        return real(module, spec, dims, path, sizes)

    monkeypatch.setattr(ex, "check_onnx", check)


def test_interrupted_build_leaves_nothing_that_looks_complete(tiny_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "eng"
    calls: list = []
    _interrupt_at(monkeypatch, "vae_encoder", calls)
    with pytest.raises(KeyboardInterrupt):
        ex.build(tiny_model_dir, out, onnx_only=True, log=lambda s: None)
    assert calls == ["text_encoder", "vae_encoder"]
    names = sorted(p.name for p in out.iterdir())
    # the finished graph and its record; nothing of the interrupted one, no manifest, no temp files
    assert names == ["text_encoder.onnx", "text_encoder.onnx.json"], names
    with pytest.raises(EngineError, match="manifest.json is missing"):
        verify_manifest(out, tiny_model_dir, "onnxruntime")


def test_force_rebuilds_and_an_interrupted_rebuild_drops_the_manifest(engines_dir, tiny_model_dir,
                                                                      tmp_path, monkeypatch):
    d = _copy(engines_dir, tmp_path)
    calls: list = []
    lines: list[str] = []
    _interrupt_at(monkeypatch, "vae_encoder", calls)
    with pytest.raises(KeyboardInterrupt):
        ex.build(tiny_model_dir, d, onnx_only=True, force=True, log=lines.append)
    assert calls == ["text_encoder", "vae_encoder"]  # --force re-exported the up-to-date graphs
    assert any("onnx text_encoder: export ..." in ln for ln in lines)
    assert not (d / MANIFEST).exists() and _leftovers(d) == []


def test_check_above_tolerance_fails_loudly_and_installs_nothing(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "ATOL", 0.0)
    monkeypatch.setattr(onnx_export, "RTOL", 0.0)
    out = tmp_path / "eng"
    with pytest.raises(EngineError, match="text_encoder graph does not match PyTorch.*last_hidden_state"):
        ex.build(tiny_model_dir, out, onnx_only=True, log=lambda s: None)
    assert list(out.iterdir()) == []


# --------------------------------------------------------------------------- command line
def test_build_engines_script_reuses_and_cli_rejects_bad_usage(engines_dir, tiny_model_dir, tmp_path):
    d = _copy(engines_dir, tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(ROOT / "export" / "build_engines.py"), "--model", str(tiny_model_dir),
                        "--out", str(d), "--onnx-only"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "onnx unet_attn: up to date" in r.stderr and "manifest: up to date" in r.stderr
    from faseg_rt.cli.main import main

    assert main(["export", "--model", str(tiny_model_dir), "--out", str(d), "--onnx-only", "--opset", "16"]) == 2
    assert main(["export", "--model", str(tiny_model_dir), "--out", str(d), "--onnx-only",
                 "--batch-sizes", "0,2"]) == 2
    for opset in (7, 16, 21):  # below 17 LayerNorm is decomposed; above 20 the exporter has no symbolic
        with pytest.raises(InvalidInputError, match="^opset must"):
            ex.build(tiny_model_dir, d, onnx_only=True, opset=opset)


# --------------------------------------------------------------------------- TensorRT
@pytest.mark.skipif(HAS_CUDA, reason="checks the refusal without a CUDA GPU")
def test_tensorrt_without_cuda_fails_fast(engines_dir, tiny_model_dir, tmp_path):
    out = tmp_path / "trt"
    with pytest.raises(BackendUnavailableError, match="TensorRT needs a CUDA GPU.*--onnx-only.*onnxruntime"):
        ex.build(tiny_model_dir, out, fp16=True)
    assert not out.exists()  # refused before any export work
    with pytest.raises(BackendUnavailableError, match="TensorRT needs a CUDA GPU"):
        Segmenter.from_pretrained(tiny_model_dir, backend="tensorrt", engines=engines_dir[0], device="cpu",
                                  dtype=torch.float32)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU")
def test_tensorrt_engines_match_torch(engines_dir, tiny_model_dir, parity_cases, tmp_path):
    pytest.importorskip("tensorrt", reason="tensorrt not installed (pip install -e '.[tensorrt]')")
    d = _copy(engines_dir, tmp_path)
    man = ex.build(tiny_model_dir, d, batch_sizes="1,2", log=print)
    assert man["engines"]["gpu"]["name"] == torch.cuda.get_device_name()
    assert (d / man["engines"]["timing_cache"]).is_file() and not man["engines"]["tf32"]
    assert len(man["engines"]["profiles"]["unet"]) == 2  # latency and throughput
    seg = Segmenter.from_pretrained(tiny_model_dir, backend="tensorrt", engines=d, device="cuda",
                                    dtype=torch.float32)
    for c in parity_cases:
        got = seg(c["image"], classes=c["classes"], caption=c["caption"])
        assert float((got.labels == c["fast"].labels).mean()) >= 0.999
        assert float(np.abs(got.scores - c["fast"].scores).max()) <= 1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU")
def test_tensorrt_fp16_engines_match_torch_fp16(engines_dir, tiny_model_dir, parity_cases, tmp_path):
    """fp16 engines (strongly typed, capture fp32) vs the torch fp16 backend on the same GPU:
    labels >= 99 % equal, scores within 2e-2 (fp16 kernels of two libraries)."""
    pytest.importorskip("tensorrt", reason="tensorrt not installed (pip install -e '.[tensorrt]')")
    d = _copy(engines_dir, tmp_path)
    ex.build(tiny_model_dir, d, fp16=True, batch_sizes="1,2", log=print)
    seg = Segmenter.from_pretrained(tiny_model_dir, backend="tensorrt", engines=d, device="cuda",
                                    dtype=torch.float16)
    ref = Segmenter.from_pretrained(tiny_model_dir, device="cuda", dtype=torch.float16)
    for c in parity_cases:
        got = seg(c["image"], classes=c["classes"], caption=c["caption"])
        want = ref(c["image"], classes=c["classes"], caption=c["caption"])
        assert float((got.labels == want.labels).mean()) >= 0.99
        assert float(np.abs(got.scores - want.scores).max()) <= 2e-2


# --------------------------------------------------------------------------- fp16 graphs, checks, golden data
@pytest.fixture(scope="module")
def fp16_dir(engines_dir, tiny_model_dir, tmp_path_factory):
    """engines_dir plus the fp16 unet_attn graph (the one with the attention capture): the fp32
    graphs are reused, so only that export is paid for (the other fp16 graphs go the same way)."""
    d = tmp_path_factory.mktemp("fp16") / "engines"
    shutil.copytree(engines_dir[0], d)
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ex, "fp16_graphs", lambda: ("unet_attn",))
        man = ex.build(tiny_model_dir, d, onnx_only=True, fp16=True, log=lines.append)
    return d, man, lines


def test_fp16_graph_keeps_the_capture_fp32(fp16_dir, tiny_model_dir):
    import onnx

    from faseg_rt.engines.onnx_checks import capture_precision_problems

    d, man, lines = fp16_dir
    assert sum("up to date" in ln for ln in lines) == len(GRAPHS)  # the fp32 graphs were reused
    assert json.loads((d / "unet_attn.onnx.json").read_text())["entry"]["dtype"] == "float32"
    assert sorted(man["graphs"]["unet_attn"]["files"]) == ["unet_attn.onnx"]
    assert verify_manifest(d, tiny_model_dir, "onnxruntime")  # fp32 and fp16 files all intact
    g = man["graphs_fp16"]["unet_attn"]
    assert g["file"] == "unet_attn.fp16.onnx" and g["precision"] == "fp16"
    assert [t["dtype"] for t in g["inputs"]] == ["float16", "int64", "float16", "float16"]
    assert {t["dtype"] for t in g["outputs"]} == {"float32"}  # the capture summaries
    for o, err in g["check"]["max_abs_error"].items():  # vs the fp16 torch module
        assert err <= g["check"]["tolerance"][o], o
    assert g["structure"]["fp16_hazards"] == [] and g["structure"]["unknown_dims"] == 0
    proto = onnx.load(str(d / g["file"]))
    assert capture_precision_problems(proto, skipped=("cross_64",)) == []  # cross_64: zeros (--skip-cross)
    assert capture_precision_problems(proto) == ["cross_64: no fp32 Softmax / ReduceMean found in its capture"]
    # break it: every Cast to float32 becomes a cast to float16, so the capture runs in fp16
    for n in proto.graph.node:
        if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT:
            n.attribute[0].i = onnx.TensorProto.FLOAT16
    for o in proto.graph.output:
        o.type.tensor_type.elem_type = onnx.TensorProto.FLOAT16
    problems = capture_precision_problems(proto)
    assert any("cross_32 is not float32" in p for p in problems), problems


def test_golden_data_and_validation(fp16_dir, tiny_model_dir, tmp_path):
    """Golden inputs + ORT-CPU outputs saved in polygraphy's formats; a backend validated against
    them (here onnxruntime fp16 on the CPU, on the GPU TensorRT); a wrong output fails."""
    from polygraphy.json import load_json, save_json

    from faseg_rt.backends import load_backend
    from faseg_rt.cli import main
    from faseg_rt.engines.golden import validate

    d = fp16_dir[0]
    golden = tmp_path / "golden"
    assert main(["golden", "--engines", str(d), "--out", str(golden), "--fp16",
                 "--graphs", "text_encoder,unet_attn"]) == 0
    rec = json.loads((golden / "golden.json").read_text())
    assert rec["precision"] == "fp16" and set(rec["graphs"]) == {"text_encoder", "unet_attn"}
    assert rec["graphs"]["unet_attn"]["file"] == "unet_attn.fp16.onnx"
    feed = load_json(str(golden / "unet_attn.inputs.json"))[0]
    assert feed["latents"].dtype == np.float16 and feed["latents"].shape == (2, 4, 64, 64)
    be = load_backend("onnxruntime", tiny_model_dir, device="cpu", dtype=torch.float16, engines=d)
    rep = validate(be, golden, log=lambda s: None)
    assert rep["passed"] and rep["graphs"]["unet_attn"]["passed"]
    assert rep["graphs"]["unet_attn"]["errors"]["cross_64"]["max_abs"] <= 1e-6  # same graph, same runtime
    # a golden output off by 5 % (over the 2 % of max|ref| fp16 allows): the comparison catches
    # it (exit 1 from the command line)
    res = load_json(str(golden / "text_encoder.outputs.json"))
    res[0][1][0]["last_hidden_state"] = res[0][1][0]["last_hidden_state"] * 1.05 + 0.05
    save_json(res, str(golden / "text_encoder.outputs.json"))
    assert main(["validate", "--model", str(tiny_model_dir), "--engines", str(d), "--golden", str(golden),
                 "--backend", "onnxruntime", "--device", "cpu", "--graphs", "text_encoder",
                 "--report", str(tmp_path / "rep.json")]) == 1
    bad = json.loads((tmp_path / "rep.json").read_text())
    assert bad["passed"] is False and bad["graphs"]["text_encoder"]["errors"]["last_hidden_state"]["max_abs"] > 0.01


#: The corruption the golden rule must catch: one cross-attention layer's keys scaled by this.
#: Its size is checked in float64 first (below); 1.05 moved the outputs by only 0.6-1.1 times
#: the fp16 tolerance, so whether it failed depended on the CPU's fp16 kernels.
KEY_SCALE = 1.5


def _cross_attention_keys(backend):
    unet = backend.modules[2]
    return next(m for n, m in unet.named_modules() if n.endswith("attn2")).to_k  # the first cross layer


def _unet_attn_fp64(model_dir, golden, *, key_scale: float) -> dict:
    """unet_attn's outputs in float64 torch on the golden inputs, with the first cross layer's keys
    scaled by `key_scale`: the exact effect of a corruption, free of any fp16 kernel's rounding."""
    from polygraphy.json import load_json

    from faseg_rt.backends import load_backend

    be = load_backend("torch", model_dir, device="cpu", dtype=torch.float64)
    with torch.no_grad():
        _cross_attention_keys(be).weight.mul_(key_scale)
    feed = load_json(str(golden / "unet_attn.inputs.json"))[0]
    inputs = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feed.items()}
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    return {k: v.numpy() for k, v in be.unet_attn(**inputs).items()}


@pytest.mark.slow
def test_golden_rule_passes_torch_fp16_and_fails_one_broken_layer(fp16_dir, tiny_model_dir, tmp_path):
    """torch fp16 against ONNX Runtime fp16 golden data of the same graph: correct, so it must
    pass (per-element tolerances failed it on ~2 % of k_64); one cross-attention layer's keys
    scaled by KEY_SCALE must fail, on every CPU.

    Why on every CPU: the corruption's exact effect E (float64, no fp16 kernel involved) is
    measured here and must exceed 4 tolerances on some cross map.  The fp16 runs differ from the
    exact values by at most one tolerance each (what the correct run's pass shows, on whatever
    kernels this CPU has), so the broken run's distance to the golden data is at least
    E - 2 tolerances > 2 tolerances, whatever the CPU's kernels round."""
    from faseg_rt.backends import load_backend
    from faseg_rt.engines.golden import save_golden, validate
    from faseg_rt.engines.tolerance import check

    golden = tmp_path / "golden"
    save_golden(fp16_dir[0], golden, fp16=True, graphs=["unet_attn"], log=lambda s: None)
    be = load_backend("torch", tiny_model_dir, device="cpu", dtype=torch.float16)
    rep = validate(be, golden, log=lambda s: None)
    assert rep["passed"], rep["graphs"]
    assert rep["rule"].startswith("max|got - ref|")

    tol = rep["tolerances"]
    clean, broken = (_unet_attn_fp64(tiny_model_dir, golden, key_scale=s) for s in (1.0, KEY_SCALE))
    effect = {k: check(broken[k], clean[k], tol["atol"], tol["rtol"]) for k in clean if k.startswith("cross_")}
    margin = max(e["max_abs"] / e["tolerance"] for e in effect.values())
    assert margin > 4, f"the corruption moves the cross maps by only {margin:.2f} tolerances: {effect}"

    with torch.no_grad():
        _cross_attention_keys(be).weight.mul_(KEY_SCALE)
    bad = validate(be, golden, log=lambda s: None)
    assert not bad["passed"]
    errors = bad["graphs"]["unet_attn"]["errors"]
    failed = [k for k, e in errors.items() if not e["passed"]]
    assert any(k.startswith("cross_") for k in failed), errors


# onnxruntime itself warns that the CUDA provider is missing before our refusal, which is what is asserted
@pytest.mark.filterwarnings("ignore:Specified provider:UserWarning")
def test_onnxruntime_cpu_fallback_is_refused(engines_dir, tiny_model_dir, monkeypatch):
    """A CUDA provider that fails to load gives a CPU session without an error: refused."""
    import onnxruntime as ort

    from faseg_rt.backends import load_backend

    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider"] + real)
    with pytest.raises(BackendUnavailableError, match=r"session on \['CPUExecutionProvider'\], not on CUDA"):
        load_backend("onnxruntime", tiny_model_dir, device="cuda", dtype=torch.float32, engines=engines_dir[0])
