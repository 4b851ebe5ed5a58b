"""TensorRT engine builds from the checked ONNX graphs, through polygraphy (called by build.py).

Supported: TensorRT 10.12 to 11.x (backends/tensorrt_runtime.py's `check_tensorrt_version`
refuses anything else in one line; builds and the runtime share that gate).
Precision lives in the graph: fp32 engines come from the fp32 graphs, fp16 engines from the fp16
graphs (the text encoder stays fp32, see docs/export.md), whose attention capture is fp32 by
explicit Casts.  Every network is strongly typed, the only mode TensorRT 11 has, and no builder
precision flag is set (TensorRT 11 removed the fp16 builder flag and weak typing with it).

Per graph: polygraphy parses the ONNX file (`network_from_onnx_path`: weights in
<graph>.onnx.data are found next to it) into a strongly typed network; `create_config` adds two
optimisation profiles, latency (opt = 1 image) and throughput (opt = the largest batch), with
TF32 off unless asked (fp32 engines then match the fp32 graph to 1e-4).  The timing cache of
this TensorRT + GPU (`timing-<version>-<gpu>-sm<cc>.cache`) is read under polygraphy's file lock
with `set_timing_cache`'s status checked (a cache from another TensorRT / GPU is reported and
replaced), merged with whatever another build saved meanwhile, and written atomically.
"""

from __future__ import annotations

import re
from pathlib import Path

from faseg_rt.engines.cache import install, record_path, reuse
from faseg_rt.errors import EngineError
from faseg_rt.io import atomic_write_bytes, atomic_write_json

PROFILES = ("latency", "throughput")


def profile_shapes(spec_json: dict, batch_sizes, max_class_chunks: int) -> list[dict]:
    """[latency, throughput] profiles {input: [min, opt, max] shape} of one graph.

    N (latents) = 2 x images in [2 min, 2 max], opt 2 x min (latency) or 2 x max (throughput);
    J in [1, max chunks], opt 1; P (prompts to the text encoder) = 1 + J, opt 2.  With a single
    batch size, or for the text encoder (no N), the two are the same and one is built.
    """
    lo, hi = min(batch_sizes), max(batch_sizes)
    out = []
    for opt_n in (2 * lo, 2 * hi):
        ranges = {"N": (2 * lo, opt_n, 2 * hi), "J": (1, 1, max_class_chunks), "P": (1, 2, 1 + max_class_chunks)}
        prof = {t["name"]: [[ranges[d][i] if isinstance(d, str) else d for d in t["shape"]] for i in range(3)]
                for t in spec_json["inputs"]}
        if prof not in out:  # one batch size, or a graph without N (the text encoder)
            out.append(prof)
    return out


def timing_cache_name(trt_version: str, gpu: dict | None) -> str:
    """timing-<tensorrt>-<gpu>-sm<cc>.cache: tactics are only valid for one TensorRT and GPU."""
    gpu = gpu or {}
    name = re.sub(r"[^A-Za-z0-9]+", "-", gpu.get("name", "gpu")).strip("-").lower()
    return f"timing-{trt_version}-{name}-sm{gpu.get('compute_capability', '0.0').replace('.', '')}.cache"


def _load_timing_cache(config, path: Path, log) -> None:
    from polygraphy.util import LockFile

    data = b""
    if path.is_file():
        with LockFile(str(path)):
            data = path.read_bytes()
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return
    log(f"[export] {path.name} does not fit this TensorRT / GPU: building with an empty timing cache")
    if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
        raise EngineError("TensorRT refused an empty timing cache")


def _save_timing_cache(config, path: Path, log) -> None:
    """Merge this build's tactics with the file's (a parallel build may have saved), atomically."""
    from polygraphy.util import LockFile

    cache = config.get_timing_cache()
    if cache is None:
        raise EngineError("TensorRT returned no timing cache after the build")
    with LockFile(str(path)):
        if path.is_file():
            prev = config.create_timing_cache(path.read_bytes())
            if prev is None or not cache.combine(prev, ignore_mismatch=True):
                log(f"[export] could not merge the old {path.name} into this build's: replacing it")
        atomic_write_bytes(path, memoryview(cache.serialize()))


def build_engine(trt, onnx_path: Path, plan_path: Path, profiles: list[dict], cache_path: Path, *,
                 tf32: bool = False, opt_level: int | None = None, log=print) -> None:
    """Parse `onnx_path` strongly typed and write the serialized engine to `plan_path`."""
    from polygraphy.backend.trt import Profile, create_config, engine_bytes_from_network, network_from_onnx_path
    from polygraphy.exception import PolygraphyException

    try:
        builder, network, parser = network_from_onnx_path(str(onnx_path), strongly_typed=True)
        profs = []
        for shapes in profiles:
            prof = Profile()
            for name, (mn, opt, mx) in shapes.items():
                prof.add(name, min=mn, opt=opt, max=mx)
            profs.append(prof)
        config = create_config(builder, network, profiles=profs, tf32=tf32, builder_optimization_level=opt_level,
                               profiling_verbosity=trt.ProfilingVerbosity.DETAILED)
        _load_timing_cache(config, cache_path, log)
        plan = engine_bytes_from_network((builder, network, parser), config)
    except PolygraphyException as e:
        raise EngineError(f"TensorRT cannot build an engine from {onnx_path.name}: {e}") from None
    _save_timing_cache(config, cache_path, log)
    atomic_write_bytes(plan_path, memoryview(plan))


def build_engines(trt, out: Path, work: Path, graphs: dict, dims_json: dict, *, fp16, batch_sizes,
                  max_class_chunks, gpu, versions, force, stage, invalidate, log, tf32: bool = False,
                  opt_level: int | None = None) -> dict:
    """Build (or reuse, when up to date) one engine per graph from the ONNX entries `graphs` (the
    fp16 ones when fp16); returns the manifest's engines entry."""
    precision = "fp16" if fp16 else "fp32"
    cache_file = timing_cache_name(trt.__version__, gpu)
    entries, profiles = {}, {}
    for name, g in graphs.items():
        file = f"{name}.plan"
        profs = profile_shapes(g, batch_sizes, max_class_chunks)
        profiles[name] = profs
        key = {"graph": name, "onnx": g["file"], "onnx_sha256": g["files"], "precision": precision,
               "profiles": profs, "tf32": tf32, "opt_level": opt_level, "strongly_typed": True,
               "tensorrt": trt.__version__, "gpu": gpu}
        entries[name] = reuse(out, file, key, force, log, f"tensorrt {name}")
        if entries[name] is not None:
            continue
        invalidate()
        tmp_plan = work / file
        with stage(f"tensorrt {name}: build from {g['file']} (strongly typed, {len(profs)} profiles)"):
            build_engine(trt, out / g["file"], tmp_plan, profs, out / cache_file, tf32=tf32,
                         opt_level=opt_level, log=log)
        entry = {"file": file, "files": install([tmp_plan], out), "onnx": g["file"], "inputs": g["inputs"],
                 "outputs": g["outputs"], "precision": precision}
        atomic_write_json(record_path(out, file), {"key": key, "entry": entry, "files": entry["files"]})
        entries[name] = entry
    return {"precision": precision, "gpu": gpu, "tensorrt": trt.__version__, "batch_sizes": list(batch_sizes),
            "max_class_chunks": max_class_chunks, "profiles": profiles, "profile_names": list(PROFILES),
            "tf32": tf32, "timing_cache": cache_file, "graphs": entries}
