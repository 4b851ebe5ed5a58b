"""What every benchmark shares: the random models, timing, memory, the machine's description.

Benchmarks report ratios against a baseline (the reference path, the network-only floor) run
in the same process, because a shared machine's absolute times move with its load.  One module
per benchmark beside this one; `faseg-rt bench` and the scripts in benchmarks/ go through
faseg_rt/cli/bench.py.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import warnings
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

STAGES = ["text_encoder", "vae_encoder", "unet_inversion", "unet_reconstruction", "hard", "ttf",
          "postprocess"]


# ----------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def long_vocabularies_expected():
    """Benchmarks use vocabularies longer than one 77-token prompt on purpose (K = 150 memory,
    K up to 1000 in vocab); the runtime's "the full prompt is N tokens" warning, meant for a
    caller who did not know, would only interrupt their output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the full prompt is", category=UserWarning)
        yield


def resolve_model(spec: str, cache: Path) -> Path:
    """'tiny' / 'full' build a random SD 1.5-shaped model under cache; anything else is a path/id."""
    from faseg_rt.testing import build_tiny_model

    if spec in ("tiny", "full"):
        return build_tiny_model(cache / f"{spec}-sd15-random", full=spec == "full")
    return Path(spec) if Path(spec).exists() else spec


def load_segmenter(args, model, backend: str = "torch", dtype=None):
    """The Segmenter a benchmark measures: --device, --dtype (a name; `dtype` overrides it) and
    --engines as given, with torch's threads by the thread policy (--threads wins)."""
    from faseg_rt.segmenter import Segmenter
    from faseg_rt.threads import apply

    apply(getattr(args, "num_threads", None))

    return Segmenter.from_pretrained(model, backend=backend, device=args.device,
                                     dtype=dtype or args.dtype, engines=args.engines)


def compared_dtypes(dtype) -> list:
    """--dtype bf16 / auto times float32 too, in the same run: [fp32, the dtype]; else [dtype]."""
    return ["fp32", dtype] if dtype in ("bf16", "bfloat16", "auto") else [dtype]


def summarize(samples: list[float]) -> dict:
    s = sorted(samples)
    p90 = s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]
    return {"median": statistics.median(s), "p90": p90, "n": len(s)}


#: the /proc/cpuinfo flags that decide which kernels run (AVX2, AVX-512, bf16 dot products, AMX)
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_description(cpuinfo: str | None = None) -> dict:
    """{"cpu": model name, "isa": the kernels torch dispatches to now (ATen's capability, which
    ATEN_CPU_CAPABILITY caps; ONEDNN_MAX_CPU_ISA when set), "cpu_flags": ISA_FLAGS present}.
    cpuinfo: /proc/cpuinfo's text (read when None; empty where there is none, e.g. macOS)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    model, flags = "", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        if key.strip() == "flags" and not flags:
            flags = set(value.split())
    isa = torch.backends.cpu.get_cpu_capability()
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        isa += f" (oneDNN max {os.environ['ONEDNN_MAX_CPU_ISA']})"
    return {"cpu": model or platform.processor() or platform.machine(), "isa": isa,
            "cpu_flags": [f for f in ISA_FLAGS if f in flags]}


def machine_info(device, load_before=None) -> dict:
    """Where a result comes from: CPU model, ISA in use and flags, torch's threads and why
    (faseg_rt.threads), the cores and the CPUs this process may run on, and the load average
    (1/5/15 min) before the run (when the caller took it) and now; the GPU's name on CUDA."""
    from faseg_rt.threads import current, read_affinity

    affinity = read_affinity()
    info = {"python": platform.python_version(), "torch": torch.__version__, **cpu_description(),
            "threads": torch.get_num_threads(), "thread_policy": current(), "cores": os.cpu_count(),
            "affinity": None if affinity is None else sorted(affinity),
            "load_before": None if load_before is None else list(load_before),
            "load_after": list(os.getloadavg())}
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def loaded_heading(machine: dict) -> str:
    """A heading for a table measured while the 1-minute load average (before or after the run)
    exceeded the CPUs the run could use (its thread policy's cpus_allowed, else the cores), plus
    the busy neighbours the run started itself (machine["background"], `latency --background`):
    its figures are that run's under contention, not the machine's speed.  "" otherwise."""
    cores = (machine.get("thread_policy") or {}).get("cpus_allowed") or machine.get("cores")
    own = int(machine.get("background") or 0)
    loads = [x[0] for x in (machine.get("load_before"), machine.get("load_after")) if x]
    if not cores or not loads or max(loads) <= cores + own:
        return ""
    before, after = (f"{x[0]:.1f}" if x else "?" for x in (machine.get("load_before"), machine.get("load_after")))
    mine = f" and the {own} busy neighbour(s) it started" if own else ""
    return (f"**Loaded run: load average {before} before, {after} after, above the {cores} CPU(s) this "
            f"run could use{mine}; the figures below are this run's under contention, not the machine's "
            "speed.**\n\n")


def machine_line(machine: dict) -> str:
    """One line under a table: CPU, ISA in use, threads and why, load before -> after; the
    pinning (--cpus) and the busy neighbours this run started, when there were any."""
    pol = machine.get("thread_policy") or {}
    pinned, own = machine.get("pinned"), machine.get("background")
    load = " -> ".join(f"{x[0]:.1f}" for x in (machine.get("load_before"), machine.get("load_after")) if x)
    flags = " ".join(machine.get("cpu_flags") or []) or "none of " + "/".join(ISA_FLAGS)
    return (f"Machine: {machine.get('cpu')}, kernels {machine.get('isa')} (flags: {flags}), "
            f"{machine.get('threads')} thread(s) ({pol.get('source', '?')}) of {machine.get('cores')} "
            f"core(s), load average {load or '?'}, torch {machine.get('torch')}"
            + (f", pinned to CPU(s) {pinned['cpus']} of {pinned['before']}" if pinned else "")
            + (f", {own} busy neighbour(s) started by this run" if own else "")
            + (f", GPU {machine['gpu']}" if machine.get("gpu") else ""))


def with_provenance(table: str, machine: dict) -> str:
    """The table with the loaded-run heading (when it applies) above it and the machine line under it."""
    return f"{loaded_heading(machine)}{table}\n\n{machine_line(machine)}"


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of live tensor storages created inside the block (CPU or GPU), by watching
    every op's outputs and their release; the inputs that existed before are not counted."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, int] = {}
        self.refs: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _release(self, ptr):
        self.refs[ptr] -= 1
        if self.refs[ptr] == 0:
            self.current -= self.live.pop(ptr)
            del self.refs[ptr]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                try:
                    st = t.untyped_storage()
                except (RuntimeError, NotImplementedError):
                    continue
                ptr = st.data_ptr()
                if ptr not in self.live:
                    self.live[ptr] = st.nbytes()
                    self.refs[ptr] = 0
                    self.current += st.nbytes()
                    self.peak = max(self.peak, self.current)
                self.refs[ptr] += 1
                weakref.finalize(t, self._release, ptr)
        return out


def hard_memory_mb(seg, classes_count: int, summaries: dict) -> float:
    """Extra memory (MB) of cross fusion + HARD + TTF for K classes on given summaries."""
    classes = [f"class {i}" for i in range(classes_count)]
    text = seg.encode_text(classes)
    n = summaries["q_64"].shape[0]
    if summaries["cross_8"].shape[1] < text.chunks.shape[0]:
        # more class prompts than captured: repeat the captured chunk (shapes matter, not values)
        j = text.chunks.shape[0]
        summaries = dict(summaries)
        for r in (8, 16, 32, 64):
            summaries[f"cross_{r}"] = summaries[f"cross_{r}"][:, :1].expand(n, j, -1, -1).contiguous()
    if torch.device(seg.device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        seg.refine(summaries, text.prompts)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with torch.inference_mode(), PeakTensorMemory() as m:
        out = seg.refine(summaries, text.prompts)
        del out
    return m.peak / 2**20


def reference_hard_memory_mb(summaries: dict, classes_count: int) -> float:
    """The same measure for the literal reference's HARD + TTF (dense 4096 x 4096 matrices)."""
    from faseg_rt.method.reference import reference_hard_ttf

    s = {k: v[:2].float().cpu() for k, v in summaries.items()}
    selfs = {r: s[f"self_{r}"] for r in (8, 16, 32)}
    cross = {r: s[f"cross_{r}"][:, :1] for r in (8, 16, 32, 64)}
    spans = [[(1 + i, 2 + i) for i in range(min(classes_count, 75))]]
    with torch.inference_mode():
        selfs[64] = torch.softmax(s["q_64"] @ s["k_64"].transpose(-1, -2), -1).mean(1)
        with PeakTensorMemory() as m:
            reference_hard_ttf(cross, selfs, spans, 0.55)
    return m.peak / 2**20


# ----------------------------------------------------------------------------- latency


# ----------------------------------------------------------------------------- throughput


# ----------------------------------------------------------------------------- ablations


# ----------------------------------------------------------------------------- operator profile
