"""The steps of `faseg-rt bench gpu` and the preflight that runs before any of them.

A time-boxed, resumable benchmark for any CUDA GPU: the work is cut into steps of one variant x
one batch size, each estimated (H100-class GPU, 16 CPU cores) to take under 3 minutes, so that
`--budget SECONDS` can stop starting steps that would not fit and a second run into the same
folder continues where the first stopped.  The default order measures what matters most first.
Preflight needs nothing beyond the installed packages: on an offline machine it names the
wheels to copy over (WHEELS).

Estimates (seconds) include the step's own Python start-up and model load (~15 s for the
SD 1.5-width random model); the first step that needs `full` also builds it (~60 s, once).
Compile is the longest: inductor compiles vae, unet, unet_attn, HARD and TTF at one batch shape.
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import time
from dataclasses import dataclass

#: torch fast-path variants: Segmenter.from_pretrained keyword arguments.
VARIANTS = {"eager": {}, "graphs": {"cuda_graphs": True}, "compiled": {"compile": True},
            "compiled+graphs": {"compile": True, "cuda_graphs": True}}


@dataclass(frozen=True)
class Step:
    name: str
    kind: str                  # env | parity | latency | reference | tensorrt | onnxruntime
    model: str = "full"        # "tiny" or "full" (random weights, SD 1.5 widths)
    variant: str = "eager"     # a VARIANTS key (latency steps)
    batch: int = 1
    estimate_s: int = 60       # on an H100-class GPU; what --budget counts
    default: bool = True       # in the plan unless --steps says otherwise

    @property
    def needs(self) -> tuple[str, ...]:
        """What preflight must find for this step (CHECKS keys)."""
        base = {"env": (), "parity": ("diffusers",), "latency": ("diffusers",), "reference": ("diffusers",),
                "tensorrt": ("diffusers", "onnx", "onnxruntime", "polygraphy", "tensorrt"),
                "onnxruntime": ("diffusers", "onnx", "polygraphy", "onnxruntime-gpu")}[self.kind]
        if "graphs" in self.variant or self.kind in ("tensorrt", "onnxruntime"):
            base += ("cuda",)
        if "compiled" in self.variant:
            base += ("cuda", "cc", "triton")
        return tuple(dict.fromkeys(base))


def _lat(variant: str, batch: int, est: int, model: str = "full", default: bool = True) -> Step:
    return Step(f"{variant}-b{batch}-{model}", "latency", model, variant, batch, est, default)


#: Every step, in the order they run.  Default plan: ~890 s, so two commands of --budget 540.
STEPS = (
    Step("env", "env", "tiny", estimate_s=20),
    Step("parity-fp16-full", "parity", "full", estimate_s=120),
    _lat("eager", 1, 60), _lat("eager", 8, 60),
    _lat("graphs", 1, 75), _lat("graphs", 8, 75),
    _lat("compiled", 1, 180),
    Step("tensorrt-b1-tiny", "tensorrt", "tiny", estimate_s=180),
    Step("onnxruntime-b1-tiny", "onnxruntime", "tiny", estimate_s=120),
    # chosen with --steps (or --steps all): batch 4, compiled at batch 8 (a second compile),
    # both switches together, the literal reference (CPU-bound), and the tiny model
    _lat("eager", 4, 60, default=False),
    _lat("compiled", 8, 180, default=False),
    _lat("compiled+graphs", 1, 180, default=False),
    Step("parity-reference-tiny", "reference", "tiny", estimate_s=120, default=False),
    _lat("eager", 1, 40, "tiny", default=False),
    _lat("graphs", 1, 40, "tiny", default=False),
)


def select(spec: str | None, dry: bool) -> list[Step]:
    """The steps `--steps` names (comma list, "default" or "all"), in plan order.  --dry runs
    every step on the tiny model, so "-full" steps become "-tiny" ones there."""
    steps = list(STEPS)
    if dry:
        seen, steps = set(), []
        for s in STEPS:
            t = Step(s.name.replace("-full", "-tiny"), s.kind, "tiny", s.variant, s.batch, s.estimate_s,
                     s.default)
            if t.name not in seen:
                seen.add(t.name)
                steps.append(t)
    if spec in (None, "", "default"):
        return [s for s in steps if s.default]
    if spec == "all":
        return steps
    want = [w.strip() for w in spec.split(",") if w.strip()]
    known = {s.name for s in steps}
    unknown = [w for w in want if w not in known]
    if unknown:
        from faseg_rt.errors import InvalidInputError

        raise InvalidInputError(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}")
    return [s for s in steps if s.name in want]


# ----------------------------------------------------------------------------- run keys
def run_key(step: Step, args) -> dict:
    """What a step's numbers depend on beyond the step itself: a record from an earlier run is
    kept only when its key is equal (the dry flag, the arguments, the package version and the
    git commit of the checkout when there is one), so a CPU --dry record never stands in for a
    GPU one, nor a record of older code for the current one."""
    from faseg_rt.version import __version__

    return {"step": step.name, "dry": bool(args.dry), "iters": args.iters, "cache": str(args.cache),
            "version": __version__, "commit": git_commit()}


def key_digest(key: dict) -> str:
    """A short stable name for a key (file names of what a step leaves for later steps)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """HEAD of the git checkout this package is imported from (with '+dirty' when tracked files
    differ from it), or None when it is not one (an installed wheel, no git)."""
    import subprocess
    from pathlib import Path

    pkg = Path(__file__).resolve().parents[1]
    try:
        top = subprocess.run(["git", "-C", str(pkg), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.split()
        if len(top) != 2 or Path(top[0]).resolve() != pkg.parent:
            return None  # a repository that merely contains an installed copy
        dirty = subprocess.run(["git", "-C", str(pkg), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return top[1] + ("+dirty" if dirty else "")


# ----------------------------------------------------------------------------- preflight
#: What to install (pip download --no-deps on a machine with a registry, see benchmarks/README.md
#: "On a GPU") when an import fails for want of a module: the module's name -> its wheel.
WHEELS = {"diffusers": "diffusers==0.42.1", "PIL": "pillow==13.0.0", "requests": "requests==2.34.2",
          "charset_normalizer": "charset-normalizer==3.4.7", "idna": "idna==3.21", "urllib3": "urllib3==2.7.0",
          "certifi": "certifi==2026.5.20", "importlib_metadata": "importlib-metadata==10.2.0",
          "zipp": "zipp==4.1.2", "huggingface_hub": "huggingface-hub==2.4.0", "accelerate": "accelerate==1.16.0",
          "onnx": "onnx==1.23.2", "polygraphy": "polygraphy==0.53.6"}
#: Free GPU memory below which CUDA steps are not started (the full model at batch 8 in fp16
#: with its fp32 twin loaded for parity stays well under it).
MIN_FREE_GIB = 12.0


def _import(module: str) -> str:
    try:
        importlib.import_module(module)
        return "ok"
    except Exception as e:  # ImportError, or a version check (diffusers checks its deps' versions)
        return f"missing: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _cuda(dry: bool) -> str:
    import torch

    if dry:
        return "missing: --dry runs on the CPU"
    if not torch.cuda.is_available():
        return "missing: torch.cuda.is_available() is False"
    free, total = torch.cuda.mem_get_info()
    gib = free / 2**30
    state = "ok" if gib >= MIN_FREE_GIB else f"missing: only {gib:.1f} GiB free, need {MIN_FREE_GIB}"
    return f"{state} ({torch.cuda.get_device_name()}, {gib:.1f} of {total / 2**30:.1f} GiB free)"


def _compiler() -> str:
    cc = os.environ.get("CC") or next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    path = shutil.which(cc) if cc else None
    return f"ok ({path})" if path else "missing: no C compiler (cc, gcc or clang; inductor needs one)"


def _ort_gpu() -> str:
    try:
        import onnxruntime as ort
    except ImportError as e:
        return f"missing: {e}"
    got = ort.get_available_providers()
    return "ok" if "CUDAExecutionProvider" in got else f"missing: no CUDAExecutionProvider in {got}"


def _tensorrt() -> str:
    try:
        from faseg_rt.backends.tensorrt_runtime import require_tensorrt

        return f"ok ({require_tensorrt().__version__})"
    except Exception as e:  # BackendUnavailableError says why
        return f"missing: {e}"


CHECKS = {"cuda": _cuda, "diffusers": lambda dry: _import("diffusers"), "cc": lambda dry: _compiler(),
          "triton": lambda dry: _import("triton"), "onnx": lambda dry: _import("onnx"),
          "onnxruntime": lambda dry: _import("onnxruntime"), "polygraphy": lambda dry: _import("polygraphy"),
          "onnxruntime-gpu": lambda dry: _ort_gpu(), "tensorrt": lambda dry: _tensorrt()}


def _names(state: str, module: str, dist: str) -> bool:
    """Whether a failed check's message names `module` (No module named 'x') or `dist` (a
    version requirement such as huggingface-hub>=1.32.0)."""
    return f"'{module}'" in state or any(f"{dist}{op}" in state for op in (">", "=", "<"))


def preflight(steps: list[Step], dry: bool, log=print) -> dict:
    """Check what each step needs before any step starts (seconds: imports).

    Returns {"checks": {check: "ok ..." | "missing: why"}, "missing": {step: [checks]},
    "carry": [wheels that would fix a missing import], "seconds"}."""
    t0 = time.perf_counter()
    wanted = sorted({n for s in steps for n in s.needs} | {"cuda"})
    checks = {n: CHECKS[n](dry) for n in wanted}
    if not dry and not checks["cuda"].startswith("ok"):  # every step but env runs on the GPU
        steps_needs = {s.name: tuple(dict.fromkeys(s.needs + (("cuda",) if s.kind != "env" else ())))
                       for s in steps}
    else:
        steps_needs = {s.name: s.needs for s in steps}
    missing = {name: [n for n in needs if not checks[n].startswith("ok")] for name, needs in steps_needs.items()}
    carry = sorted({w for n, state in checks.items() if not state.startswith("ok")
                    for mod, w in WHEELS.items() if _names(state, mod, w.split("==")[0]) or n == mod})
    for n, state in checks.items():
        log(f"[preflight] {n}: {state}")
    skipped = [f"{name} (needs {', '.join(m)})" for name, m in missing.items() if m]
    if skipped:
        log(f"[preflight] will skip: {'; '.join(skipped)}")
    if carry:
        log(f"[preflight] install these wheels (benchmarks/README.md, 'On a GPU'): {' '.join(carry)}")
    return {"checks": checks, "missing": missing, "carry": carry, "seconds": time.perf_counter() - t0}
