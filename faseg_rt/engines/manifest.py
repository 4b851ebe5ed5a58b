"""The engines directory and its manifest: what was built, from what, with what, for which GPU.

`export/build_engines.py` (faseg_rt.engines.build) writes DIR/manifest.json last; the onnxruntime and
tensorrt backends call `verify_manifest` before loading anything, so graphs built from another
model, by other library versions, for another GPU, or damaged on disk are refused with a
message that lists the differences and the command that rebuilds them.  Never a silent wrong
answer.

This module is imported at run time, so it must not import `onnx` (only hashlib / json).

Manifest layout (format 1; see docs/export.md):
    format, created, build_args {model, onnx_only, fp16, batch_sizes, opset, max_class_chunks,
             latent_size, tf32}
    model   {id, sha256, files {relative path: sha256}}
    dims    ModelDims fields (graph shapes)
    versions {faseg_rt, torch, diffusers, transformers, onnx, onnxruntime, tensorrt}
    graphs  {name: {file, files {name: sha256}, opset, dtype, precision, inputs, outputs,
             check {max_abs_error, tolerance, sizes}, structure {unknown_dims, attention, ...}}}
    graphs_fp16 null | the same for the fp16 graphs (vae_encoder, unet, unet_attn)
    engines null | {precision, gpu {name, compute_capability}, tensorrt, batch_sizes,
             max_class_chunks, profiles {graph: [latency, throughput] {input: [min, opt, max]}},
             tf32, timing_cache, graphs {name: {file, files {name: sha256}, onnx, inputs, outputs}}}
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import fields
from pathlib import Path

from faseg_rt.engines import versions
from faseg_rt.engines.file_hash import file_sha256
from faseg_rt.engines.graphs import GraphSpec, TensorSpec
from faseg_rt.errors import EngineError, EngineMismatchError
from faseg_rt.model import ModelDims

MANIFEST = "manifest.json"
FORMAT = 1
#: Export order: cheapest first, so an early failure costs little.
GRAPHS = ("text_encoder", "vae_encoder", "unet", "unet_attn")
#: Model files whose contents define the graphs (weights and the configs that shape them).
WEIGHT_SUFFIXES = (".safetensors", ".bin")
MODEL_COMPONENTS = ("vae", "text_encoder", "unet")
#: Versions recorded in the manifest and, per backend, those that must match at load time.
VERSION_PACKAGES = ("faseg_rt", "torch", "diffusers", "transformers", "onnx", "onnxruntime", "tensorrt")
CHECKED_VERSIONS = {
    "onnxruntime": ("faseg_rt", "torch", "diffusers", "transformers", "onnxruntime"),
    "tensorrt": ("faseg_rt", "torch", "diffusers", "transformers", "tensorrt"),
}


# --------------------------------------------------------------------------- facts about here
def model_root(model) -> Path:
    """The local directory holding `model`: itself, or the hub cache snapshot of a hub id."""
    path = Path(model)
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(model), local_files_only=True))
    except Exception as e:  # not cached yet, offline, unknown id
        raise EngineError(f"cannot find the files of model {model} locally ({type(e).__name__}: {e}); "
                          "load it once (e.g. Segmenter.from_pretrained) or pass a local directory") from None


def model_fingerprint(model) -> dict:
    """{id, sha256, files}: sha256 of each weight / config file of the vae, text encoder and UNet.

    The combined sha256 covers the sorted (path, file hash) pairs, so it changes when any weight
    or config of the three networks changes, and not when the directory moves.
    """
    root = model_root(model)
    files = {}
    for comp in MODEL_COMPONENTS:
        d = root / comp
        if not d.is_dir():
            raise EngineError(f"model {model} has no {comp}/ directory: not an SD 1.x diffusers model")
        for p in sorted(d.iterdir()):
            if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name == "config.json"):
                files[f"{comp}/{p.name}"] = file_sha256(p)
    if not any(k.endswith(WEIGHT_SUFFIXES) for k in files):
        raise EngineError(f"model {model} has no weight files (*.safetensors / *.bin) under "
                          f"{', '.join(MODEL_COMPONENTS)}")
    combined = hashlib.sha256("\n".join(f"{k} {v}" for k, v in sorted(files.items())).encode()).hexdigest()
    return {"id": str(model), "sha256": combined, "files": files}


def installed_versions() -> dict:
    """Versions of the packages that produce or run the graphs, from package metadata (None when
    not installed); engines/versions.py says how they are read and compared."""
    return versions.installed_versions(VERSION_PACKAGES)


def gpu_info(device=None) -> dict | None:
    """{name, compute_capability} of the CUDA device (default: the current one), or None."""
    import torch

    if not torch.cuda.is_available():
        return None
    idx = torch.device(device).index if device is not None and torch.device(device).index is not None \
        else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(idx)
    return {"name": torch.cuda.get_device_name(idx), "compute_capability": f"{major}.{minor}"}


def spec_to_json(spec: GraphSpec) -> dict:
    """Input / output names, shapes (ints and dimension names) and dtypes of a graph."""
    def t(ts):
        return {"name": ts.name, "shape": list(ts.shape), "dtype": ts.dtype}

    return {"inputs": [t(x) for x in spec.inputs], "outputs": [t(x) for x in spec.outputs]}


def spec_from_json(name: str, entry: dict) -> GraphSpec:
    """The GraphSpec of a manifest entry (its own dtypes: fp16 graphs, or the fp32 text encoder)."""
    def ts(t):
        return TensorSpec(t["name"], tuple(t["shape"]), t["dtype"])

    return GraphSpec(name, tuple(ts(t) for t in entry["inputs"]), tuple(ts(t) for t in entry["outputs"]))


def dims_from_json(d: dict) -> ModelDims:
    names = {f.name for f in fields(ModelDims)}
    return ModelDims(**{k: v for k, v in d.items() if k in names})


# --------------------------------------------------------------------------- the rebuild command
def rebuild_command(model, out, *, onnx_only: bool = True, fp16: bool = False, batch_sizes=None,
                    force: bool = True) -> str:
    """The exact build_engines command line that rebuilds `out` for `model`."""
    cmd = ["python", "export/build_engines.py", "--model", str(model), "--out", str(out)]
    if onnx_only:
        cmd.append("--onnx-only")
    if fp16:
        cmd.append("--fp16")
    if batch_sizes and not onnx_only:  # the batch profile only concerns TensorRT engines
        cmd += ["--batch-sizes", ",".join(str(b) for b in batch_sizes)]
    if force:
        cmd.append("--force")
    return " ".join(shlex.quote(c) for c in cmd)


# --------------------------------------------------------------------------- reading / checking
def graph_entries(manifest: dict, precision: str) -> dict:
    """{graph: manifest entry} of the ONNX graphs a `precision` (fp32 / fp16) backend runs: the
    fp16 graphs, and the fp32 ones of the graphs exported in fp32 only (the text encoder)."""
    if precision == "fp32":
        return manifest["graphs"]
    fp16 = manifest.get("graphs_fp16")
    if not fp16:
        raise EngineMismatchError("these engines have no fp16 graphs: export them with --fp16 (add --onnx-only "
                                  "for ONNX Runtime)")
    return {name: fp16.get(name) or manifest["graphs"][name] for name in manifest["graphs"]}


def load_manifest(engines_dir) -> dict:
    """Read DIR/manifest.json; EngineError when it is missing, unreadable or not ours."""
    if engines_dir is None:
        raise EngineError("this backend runs exported graphs: pass engines=DIR (written by "
                          "python export/build_engines.py --model MODEL --out DIR)")
    d = Path(engines_dir)
    path = d / MANIFEST
    if not d.is_dir():
        raise EngineError(f"engines directory {d} does not exist; build it with "
                          f"python export/build_engines.py --model MODEL --out {shlex.quote(str(d))}")
    if not path.is_file():
        raise EngineError(f"{path} is missing: the export into {d} did not finish (or {d} is not an "
                          "engines directory); run python export/build_engines.py --model MODEL "
                          f"--out {shlex.quote(str(d))} again")
    try:
        man = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EngineError(f"{path} is not readable JSON ({e}); rebuild with "
                          f"python export/build_engines.py --model MODEL --out {shlex.quote(str(d))} --force") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise EngineError(f"{path} is not a faseg_rt manifest of format {FORMAT}; rebuild with "
                          f"python export/build_engines.py --model MODEL --out {shlex.quote(str(d))} --force")
    return man


def check_files(engines_dir, entry: dict) -> list[str]:
    """Problems with the files of one graph / engine entry: missing or changed bytes."""
    problems = []
    for name, sha in entry["files"].items():
        p = Path(engines_dir) / name
        if not p.is_file():
            problems.append(f"{name} is missing")
        elif file_sha256(p) != sha:
            problems.append(f"{name} is corrupted or was changed after the build (sha256 differs)")
    return problems


def _check_entries(engines_dir, entries: dict, kind: str) -> list[str]:
    """Problems with the manifest's entry for each graph (missing, or files that changed)."""
    problems = []
    for name in GRAPHS:
        entry = entries.get(name)
        if entry is None:
            problems.append(f"{kind} {name} is not in the manifest")
        else:
            problems += check_files(engines_dir, entry)
    return problems


def verify_manifest(engines_dir, model, backend: str, *, device=None, fingerprint: dict | None = None) -> dict:
    """Check DIR against `model`, the installed versions and (tensorrt) the GPU; return the manifest.

    Raises EngineMismatchError listing every difference, with the command that rebuilds DIR.
    """
    if backend not in CHECKED_VERSIONS:
        raise ValueError(f"verify_manifest: backend must be one of {sorted(CHECKED_VERSIONS)}")
    man = load_manifest(engines_dir)
    args = man.get("build_args", {})
    problems = []
    try:
        fp = fingerprint or model_fingerprint(model)
    except EngineError as e:
        raise EngineMismatchError(f"cannot check {engines_dir} against model {model}: {e}") from None
    if fp["sha256"] != man["model"]["sha256"]:
        built = man["model"]["files"]
        diff = sorted(k for k in set(built) | set(fp["files"]) if built.get(k) != fp["files"].get(k))
        problems.append(f"model: built from {man['model']['id']} (weights sha256 "
                        f"{man['model']['sha256'][:12]}), loading {model} (sha256 {fp['sha256'][:12]}); "
                        f"differing files: {', '.join(diff[:6])}{' ...' if len(diff) > 6 else ''}")
    problems += versions.version_problems(man["versions"], installed_versions(), CHECKED_VERSIONS[backend])
    if backend == "onnxruntime":
        problems += _check_entries(engines_dir, man["graphs"], "graph")
        for name, entry in (man.get("graphs_fp16") or {}).items():
            problems += check_files(engines_dir, entry)
    else:
        eng = man.get("engines")
        if not eng:
            problems.append("no TensorRT engines: the directory was built with --onnx-only")
        else:
            gpu = gpu_info(device)
            if gpu != eng["gpu"]:
                problems.append(f"GPU: engines built for {eng['gpu']['name']} (compute capability "
                                f"{eng['gpu']['compute_capability']}), this machine has "
                                + ("no CUDA GPU" if gpu is None else f"{gpu['name']} ({gpu['compute_capability']})"))
            problems += _check_entries(engines_dir, eng["graphs"], "engine")
    if problems:
        onnx_only = bool(args.get("onnx_only", True)) if backend == "onnxruntime" else False
        cmd = rebuild_command(model, engines_dir, onnx_only=onnx_only,
                              fp16=bool(args.get("fp16")), batch_sizes=args.get("batch_sizes"), force=True)
        raise EngineMismatchError(
            f"the {backend} graphs in {engines_dir} cannot be used here:\n  - " + "\n  - ".join(problems)
            + f"\nRebuild them with:\n  {cmd}")
    return man
