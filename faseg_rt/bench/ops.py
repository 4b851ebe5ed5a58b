"""bf16 against fp32 per operator, at the shapes of an SD 1.5-width call, and the ceiling it sets.

A reduced dtype speeds a call only as much as its operators speed up.  This times the operator
classes that carry the full-width call (torch.profiler, benchmarks/README.md) at their real
shapes, fp32 and bf16 interleaved in one process (the policy's memory format: channels-last
convolutions in bf16), and, given the fp32 operator profile of a whole call (`faseg-rt bench
profile --model full`), scales each operator class's share by its ratio: the call's speed-up if
every operator of the class ran at the measured bf16 ratio, everything else unchanged.

    conv       3x3 convolutions of the VAE encoder (512 px) and the UNet (latent 64 / 32 / 16)
    linear     the UNet's projections and feed-forward layers (addmm / mm)
    attention  flash attention over the 4096 tokens of latent 64: the UNet's self-attention
               (8 heads of 40) and HARD's S_64 (40 heads of 40, kept fp32 by the policy)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

_CONV = [("vae 256ch @256", (2, 256, 256, 256)), ("unet 320ch @64", (2, 320, 64, 64)),
         ("unet 640ch @32", (2, 640, 32, 32)), ("unet 1280ch @16", (2, 1280, 16, 16))]
_LINEAR = [("ff 320 -> 2560 (8192 rows)", (8192, 320, 2560)), ("proj 640 -> 640 (2048 rows)", (2048, 640, 640)),
           ("ff 1280 -> 10240 (512 rows)", (512, 1280, 10240))]
_ATTENTION = [("unet self, latent 64 (2 x 8 heads x 40)", (2, 8, 4096, 40)),
              ("HARD S_64 (2 x 40 heads x 40)", (2, 40, 4096, 40))]
#: profile operator names -> class (everything else keeps its fp32 time)
PROFILE_CLASSES = {"aten::mkldnn_convolution": "conv", "aten::addmm": "linear", "aten::mm": "linear",
                   "aten::bmm": "linear", "aten::_scaled_dot_product_flash_attention_for_cpu": "attention"}


def _cases(dtype: torch.dtype):
    """(class, name, thunk) for every operator at `dtype`; inputs are made once, outside timing."""
    g = torch.Generator().manual_seed(0)
    mf = torch.channels_last if dtype == torch.bfloat16 else torch.contiguous_format
    out = []
    for name, (n, c, h, w) in _CONV:
        x = torch.randn(n, c, h, w, generator=g).to(dtype).to(memory_format=mf)
        conv = torch.nn.Conv2d(c, c, 3, padding=1).to(dtype).to(memory_format=mf)
        out.append(("conv", name, lambda conv=conv, x=x: conv(x)))
    for name, (rows, cin, cout) in _LINEAR:
        x = torch.randn(rows, cin, generator=g).to(dtype)
        lin = torch.nn.Linear(cin, cout).to(dtype)
        out.append(("linear", name, lambda lin=lin, x=x: lin(x)))
    for name, (b, h, p, d) in _ATTENTION:
        # the processor's layout: (B, P, h*d) viewed as (B, h, P, d)
        q, k, v = (torch.randn(b, p, h * d, generator=g).to(dtype).view(b, p, h, d).transpose(1, 2)
                   for _ in range(3))
        out.append(("attention", name,
                    lambda q=q, k=k, v=v, d=d: F.scaled_dot_product_attention(q, k, v, scale=d ** -0.5)))
    return out


def op_ratios(repeats: int = 3) -> list[dict]:
    """Fastest of `repeats` timings per operator, fp32 and bf16 interleaved (rows: class, op,
    fp32_ms, bf16_ms, ratio)."""
    f32, b16 = _cases(torch.float32), _cases(torch.bfloat16)
    best = {}
    with torch.inference_mode():
        for round_ in range(repeats + 1):                                  # the first round warms up
            for (cls, name, fn32), (_, _, fn16) in zip(f32, b16):
                for tag, fn in (("fp32", fn32), ("bf16", fn16)):
                    t0 = time.perf_counter()
                    fn()
                    ms = (time.perf_counter() - t0) * 1e3
                    if round_ > 0:
                        best[(name, tag)] = min(best.get((name, tag), float("inf")), ms)
    return [{"class": cls, "op": name, "fp32_ms": best[(name, "fp32")], "bf16_ms": best[(name, "bf16")],
             "ratio": best[(name, "fp32")] / best[(name, "bf16")]} for cls, name, _ in f32]


def class_ratios(rows: list[dict]) -> dict[str, float]:
    """Per class: total fp32 time over total bf16 time of its measured operators (attention: the
    UNet's own, the one the policy runs in bf16)."""
    out = {}
    for cls in ("conv", "linear", "attention"):
        mine = [r for r in rows if r["class"] == cls and not r["op"].startswith("HARD")]
        out[cls] = sum(r["fp32_ms"] for r in mine) / sum(r["bf16_ms"] for r in mine)
    return out


#: the call speed-up the precision policy was asked for (bf16 against fp32, SD 1.5 widths)
TARGET = 2.5


def ceiling(profile: dict, ratios: dict[str, float], target: float = TARGET) -> dict:
    """What an fp32 operator profile of a call says about its bf16 speed-up.

    estimate: each operator class at its measured bf16 ratio, everything else (norms,
        activations, copies) unchanged: a rough figure, since those memory-bound operators gain
        a little from half the bytes.
    needed: the ratio every operator except attention would need for the call to reach
        `target`, with attention at max(ratio, 1) (attention slower in bf16 is kept fp32).  Above
        every measured class ratio, the target is out of reach on this CPU.
    profile: `faseg-rt bench profile` JSON (total_ms, rows of op / self_ms).  It does not split
    the UNet's attention from HARD's (fp32 by the policy); both count at max(ratio, 1).
    """
    total = profile["total_ms"]
    by_class = {"conv": 0.0, "linear": 0.0, "attention": 0.0}
    for r in profile["rows"]:
        cls = PROFILE_CLASSES.get(r["op"])
        if cls:
            by_class[cls] += r["self_ms"]
    rest = total - sum(by_class.values())
    attention = by_class["attention"] / max(ratios["attention"], 1.0) / total    # share of the fp32 call
    scaled = sum(ms / ratios[c] for c, ms in by_class.items() if c != "attention")
    estimate = total / (rest + scaled + attention * total)
    budget = 1 / target - attention                  # what the rest may take, as a share of fp32
    needed = (1 - by_class["attention"] / total) / budget if budget > 0 else float("inf")
    return {"fp32_ms": total, "shares": {c: ms / total for c, ms in by_class.items()} | {"rest": rest / total},
            "speedup": estimate, "target": target, "needed_ratio": needed}


def ops(args) -> dict:
    """`faseg-rt bench ops`: operator ratios, and with --profile the call's ceiling."""
    from faseg_rt.bench.common import machine_info
    from faseg_rt.devices import cpu_bf16_flags

    rows = op_ratios(args.repeats)
    res = {"kind": "ops", "device": "cpu", "machine": machine_info(torch.device("cpu")),
           "threads": torch.get_num_threads(), "rows": rows, "class_ratios": class_ratios(rows)}
    res["bf16_units"] = cpu_bf16_flags()  # the key older result files use
    if args.profile:
        res["profile"] = str(args.profile)
        res["ceiling"] = ceiling(json.loads(Path(args.profile).read_text()), res["class_ratios"])
    return res


def ops_table(res: dict) -> str:
    units = ", ".join(f for f, on in res["bf16_units"].items() if on) or "none"
    lines = [f"bf16 against fp32 per operator (CPU, {res['threads']} threads, bf16 instructions: {units}; "
             "fastest of the repeats, interleaved)\n",
             "| class | operator (SD 1.5 widths) | fp32 ms | bf16 ms | ratio |", "|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['class']} | {r['op']} | {r['fp32_ms']:.1f} | {r['bf16_ms']:.1f} | {r['ratio']:.2f}x |")
    cr = res["class_ratios"]
    lines.append("\nper class: " + ", ".join(f"{c} {v:.2f}x" for c, v in cr.items()))
    if "ceiling" in res:
        c = res["ceiling"]
        shares = ", ".join(f"{k} {100 * v:.0f} %" for k, v in c["shares"].items())
        lines.append(f"\nfrom {res['profile']}: fp32 call {c['fp32_ms'] / 1e3:.1f} s ({shares}). "
                     f"Every conv / linear at its class ratio, attention at max(ratio, 1), the rest "
                     f"unchanged: ~{c['speedup']:.2f}x. For {c['target']}x, every operator but attention "
                     f"would need **{c['needed_ratio']:.2f}x**")
    return "\n".join(lines)
