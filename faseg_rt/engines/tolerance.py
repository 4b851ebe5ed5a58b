"""The one tolerance rule of the export checks and of golden validation.

An output matches its reference when  max|got - ref| <= atol + rtol * max|ref|  (over the whole
tensor).  Not per element: two correct fp16 implementations (another kernel, another
accumulation order) differ by a few fp16 ulps of the output's largest values, which is many
per-element relative errors on the elements near zero; a wrong layer moves the output by a
fraction of its scale, which this rule catches.  Measured on the tiny model: torch fp16 vs ONNX
Runtime fp16 on the same graph differ by up to 0.7 % of the output's max (docs/export.md).
"""

from __future__ import annotations

#: {precision: (atol, rtol)}.  fp32: for TF32-off engines and fp32 graphs; fp16: fp16 compute.
TOLERANCES = {"fp32": (1e-4, 1e-3), "fp16": (1e-3, 2e-2)}
RULE = "max|got - ref| <= atol + rtol * max|ref|"


def check(got, ref, atol: float, rtol: float) -> dict:
    """{max_abs, tolerance, max_rel_to_max, passed} of one output against its reference
    (numpy arrays of the same shape; compared in float64)."""
    import numpy as np

    g, r = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if not r.size:
        return {"max_abs": 0.0, "tolerance": atol, "max_rel_to_max": 0.0, "passed": True}
    err, scale = float(np.max(np.abs(g - r))), float(np.max(np.abs(r)))
    tol = atol + rtol * scale
    return {"max_abs": err, "tolerance": tol, "max_rel_to_max": err / max(scale, 1e-30),
            "passed": bool(np.isfinite(err) and err <= tol)}
