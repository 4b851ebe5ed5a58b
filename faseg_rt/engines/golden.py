"""Golden data for the GPU: inputs and ONNX Runtime (CPU) outputs of the exported graphs, saved
here, and the validation of a backend (TensorRT on the GPU) against them.

    faseg-rt golden   --engines DIR --out GOLDEN [--fp16]          # CPU, minutes at most
    faseg-rt validate --model M --engines DIR --golden GOLDEN --backend tensorrt --device cuda

The files are polygraphy's JSON formats, so the same data also feeds polygraphy's own tools on
the GPU machine (docs/export.md, "Validation"):

    GOLDEN/<graph>.inputs.json   a list with one feed {input name: array}  (--load-inputs)
    GOLDEN/<graph>.outputs.json  RunResults of the runner "onnxrt-cpu"       (--load-outputs)
    GOLDEN/golden.json           what they were made from: graph files and their sha256,
                                 precision, sizes, seed, and the tolerances

`validate` runs the backend's own runners (the zero-copy path the Segmenter uses) on the saved
inputs and compares each output with the rule the export checks use (engines/tolerance.py):
max|got - ref| <= atol + rtol * max|ref|, with TOLERANCES[precision] unless given.  (polygraphy's
per-element rule fails correct fp16 engines on the elements near zero; its own tools can still
read these files with --check-error-stat / quantile options.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from faseg_rt.engines.file_hash import file_sha256
from faseg_rt.engines.manifest import graph_entries, load_manifest
from faseg_rt.engines.tolerance import RULE
from faseg_rt.engines.tolerance import TOLERANCES as TOL
from faseg_rt.engines.tolerance import check as within_tolerance
from faseg_rt.errors import EngineError, InvalidInputError
from faseg_rt.io import atomic_path, atomic_write_json

GOLDEN = "golden.json"
RUNNER = "onnxrt-cpu"
#: Named sizes of the golden inputs: 1 image (N = 2 latents), 2 class chunks, P = 3 prompts;
#: other values than the export's trace (N=2, J=2, P=2) and check (N=1, J=1, P=3).
SIZES = {"N": 2, "J": 2, "P": 3}
#: {precision: {atol, rtol}}: the export checks' values (engines/tolerance.py).
TOLERANCES = {p: {"atol": a, "rtol": r} for p, (a, r) in TOL.items()}


def golden_feed(spec_json: dict, sizes: dict, seed: int) -> dict:
    """Random inputs {name: numpy array} for one graph, in the graph's input dtypes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feed = {}
    for t in spec_json["inputs"]:
        shape = tuple(sizes[d] if isinstance(d, str) else d for d in t["shape"])
        if t["name"] == "input_ids":
            a = rng.integers(0, 49408, shape, dtype=np.int64)
        elif t["name"] == "timestep":
            a = np.ones(shape, dtype=np.int64)  # the method's inversion timestep
        elif t["name"] == "pixels":
            a = rng.uniform(-1, 1, shape)
        else:
            a = rng.standard_normal(shape)
        feed[t["name"]] = a.astype(t["dtype"])
    return feed


def save_golden(engines, out, *, fp16: bool = False, sizes: dict | None = None, seed: int = 0,
                graphs=None, log: Callable[[str], None] = print) -> dict:
    """Run the graphs of `engines` (all, or those named in `graphs`) in ONNX Runtime (CPU) on
    seeded inputs; save both in `out`."""
    import onnxruntime as ort
    from polygraphy.comparator import IterationResult, RunResults
    from polygraphy.json import save_json

    engines, out = Path(engines), Path(out)
    sizes = dict(SIZES, **(sizes or {}))
    precision = "fp16" if fp16 else "fp32"
    manifest = load_manifest(engines)
    out.mkdir(parents=True, exist_ok=True)
    record = {"precision": precision, "sizes": sizes, "seed": seed, "runner": RUNNER,
              "tolerances": TOLERANCES[precision], "rule": RULE, "model_sha256": manifest["model"]["sha256"],
              "graphs": {}}
    entries = graph_entries(manifest, precision)
    unknown = sorted(set(graphs or ()) - set(entries))
    if unknown:
        raise InvalidInputError(f"unknown graph(s) {', '.join(unknown)}; choose from {', '.join(entries)}")
    for i, (name, entry) in enumerate(entries.items()):
        if graphs and name not in graphs:
            continue
        path = engines / entry["file"]
        feed = golden_feed(entry, sizes, seed + i)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o["name"] for o in entry["outputs"]]
        outs = dict(zip(names, sess.run(names, feed)))
        results = RunResults([(RUNNER, [IterationResult(outs, runner_name=RUNNER)])])
        for suffix, obj in (("inputs", [feed]), ("outputs", results)):
            with atomic_path(out / f"{name}.{suffix}.json") as tmp:
                save_json(obj, str(tmp))
        record["graphs"][name] = {"file": entry["file"], "sha256": file_sha256(path)}
        log(f"[golden] {name}: {', '.join(f'{k}{tuple(v.shape)}' for k, v in outs.items())}")
    atomic_write_json(out / GOLDEN, record)
    return record


def _compare(ref: dict, got: dict, atol: float, rtol: float) -> dict:
    """{output: {max_abs, tolerance, max_rel_to_max, passed} or {shape, expected}}."""
    import numpy as np

    errs = {}
    for k, r in ref.items():
        g = np.asarray(got[k])
        if g.shape != np.shape(r):
            errs[k] = {"shape": list(g.shape), "expected": list(np.shape(r)), "passed": False}
        else:
            errs[k] = within_tolerance(g, r, atol, rtol)
    return errs


def validate(backend, golden, *, atol: float | None = None, rtol: float | None = None, graphs=None,
             log: Callable[[str], None] = print) -> dict:
    """Compare a loaded backend's runners with the golden outputs; returns {passed, graphs}.

    `backend` is a faseg_rt Backend (torch, onnxruntime or tensorrt) loaded for the golden's
    precision from the same engines directory (its manifest's graph hashes must match).
    """
    import numpy as np
    import torch
    from polygraphy.json import load_json

    golden = Path(golden)
    rec = _read_record(golden)
    tol = dict(rec["tolerances"])
    tol.update({k: v for k, v in (("atol", atol), ("rtol", rtol)) if v is not None})
    man = getattr(backend, "manifest", None)
    if man is not None:
        entries = graph_entries(man, rec["precision"])
        stale = [n for n, g in rec["graphs"].items() if entries[n]["files"].get(g["file"]) != g["sha256"]]
        if stale:
            raise EngineError(f"the golden data in {golden} was made from other graphs than "
                              f"{backend.engines} ({', '.join(stale)}); run faseg-rt golden again")
    report, passed = {}, True
    for name in rec["graphs"]:
        if graphs and name not in graphs:
            continue
        feed = load_json(str(golden / f"{name}.inputs.json"))[0]
        ref = load_json(str(golden / f"{name}.outputs.json"))[0][1][0]
        inputs = {k: torch.from_numpy(np.ascontiguousarray(v)).to(backend.device) for k, v in feed.items()}
        got = getattr(backend, name)(**inputs)
        got = {k: v.detach().float().cpu().numpy() for k, v in got.items()}
        ref_np = {k: np.asarray(ref[k], dtype=np.float32) for k in ref.keys()}
        errors = _compare(ref_np, got, tol["atol"], tol["rtol"])
        ok = all(e["passed"] for e in errors.values())
        passed &= ok
        report[name] = {"passed": ok, "errors": errors}
        worst = max((e.get("max_rel_to_max", float("inf")) for e in report[name]["errors"].values()), default=0)
        log(f"[validate] {name}: {'PASSED' if ok else 'FAILED'} (worst max|diff|/max|ref| {worst:.2e})")
    return {"passed": passed, "backend": backend.name, "tolerances": tol, "rule": RULE, "precision": rec["precision"],
            "graphs": report}


def _read_record(golden: Path) -> dict:
    import json

    path = golden / GOLDEN
    if not path.is_file():
        raise InvalidInputError(f"{path} is missing: make the golden data first with "
                                f"faseg-rt golden --engines DIR --out {golden}")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"{path} is not readable JSON ({e}); run faseg-rt golden again") from None
