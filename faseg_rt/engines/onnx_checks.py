"""Structure checks of an exported ONNX graph that run on the CPU, before any GPU time is spent.

What a TensorRT build on a GPU would otherwise find out the slow way (docs/export.md, "Checks"):

- shapes: with the declared output shapes removed, onnxruntime's symbolic shape inference must
  derive every graph output exactly as the spec says (ints, and the dynamic axes N / J / P), and
  leave no dimension of any intermediate tensor unknown.  A dimension the trace baked in (e.g. a
  batch of 2 turned into a constant) shows up here instead of as a profile failure at batch 8;
- attention: every attention layer of the network keeps the pattern TensorRT fuses into one
  flash-attention kernel: MatMul(Mul(q, c), Mul(k^T, c)) -> Softmax -> MatMul;
- LayerNorm: kept as LayerNormalization (opset >= 17), not decomposed into ReduceMean / Pow /
  Sqrt, which overflows in fp16;
- fp16 range: no float16 constant is inf / NaN (a weight that overflowed in the cast), and no
  float32 constant beyond +-65504 is cast to float16;
- capture precision (float16 graphs): every attention summary (cross_*, self_*, q_*, k_*) is
  computed in float32 from its Casts on: the softmaxes and means of the capture run in fp32 in
  a strongly typed engine, as they do in the torch backend.
"""

from __future__ import annotations

import re
from pathlib import Path

DYNAMIC_AXES = ("N", "J", "P")
FP16_MAX = 65504.0
_FLOAT, _FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT / FLOAT16
_CAPTURE = re.compile(r"^(cross|self|q|k)_\d+$")
_ATTN_SCOPE = re.compile(r"^(.*/attn\d+)/")


def load_graph(path: Path, with_data: bool = False):
    """The ModelProto of `path` (weights in an external .data file are read only when asked)."""
    import onnx

    return onnx.load(str(path), load_external_data=with_data)


def _dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value_info.type.tensor_type.shape.dim]


def shape_problems(proto, spec_json: dict) -> tuple[list[str], int]:
    """(problems, number of unknown intermediate dims) from symbolic inference of `proto`."""
    import copy

    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = copy.deepcopy(proto)
    for o in model.graph.output:
        o.type.tensor_type.ClearField("shape")
    del model.graph.value_info[:]
    try:
        model = SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=False)
    except Exception as e:  # the tool raises a bare Exception when inference is incomplete
        return [f"symbolic shape inference failed: {e}"], -1
    problems = []
    want = {t["name"]: list(t["shape"]) for t in spec_json["outputs"]}
    for o in model.graph.output:
        got = _dims(o)
        if got != want.get(o.name):
            problems.append(f"output {o.name}: inferred shape {got}, the spec says {want.get(o.name)}")
    unknown = [(vi.name, d) for vi in model.graph.value_info for d in _dims(vi)
               if isinstance(d, str) and d not in DYNAMIC_AXES]
    if unknown:
        problems.append(f"{len(unknown)} intermediate dims are not derived from N/J/P "
                        f"(first: {unknown[0][0]} has {unknown[0][1]!r})")
    return problems, len(unknown)


def _producers(proto) -> dict:
    return {o: n for n in proto.graph.node for o in n.output}


def _consumers(proto) -> dict:
    out: dict = {}
    for n in proto.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def attention_report(proto) -> dict:
    """{layers, fused}: UNet attention modules (node scopes .../attnK/) whose softmax feeds the
    value MatMul, and those whose softmax also has the pattern TensorRT fuses (MatMul of the
    scaled q and the scaled k^T -> Softmax -> MatMul).  Capture softmaxes feed means, not values,
    and the last cross-attention of unet_attn, whose output nothing uses, is pruned by the export;
    neither counts."""
    prod, cons = _producers(proto), _consumers(proto)
    layers, fused = set(), set()
    for n in proto.graph.node:
        if n.op_type != "Softmax" or not (m := _ATTN_SCOPE.match(n.name)):
            continue
        if not any(c.op_type == "MatMul" for c in cons.get(n.output[0], [])):
            continue
        layers.add(m.group(1))
        mm = prod.get(n.input[0])
        if mm is not None and mm.op_type == "MatMul" and all(
                (q := prod.get(i)) is not None and q.op_type == "Mul" for i in mm.input):
            fused.add(m.group(1))
    return {"layers": len(layers), "fused": len(fused)}


def layernorm_report(proto) -> dict:
    """{layernorm: LayerNormalization nodes, decomposed: Pow nodes feeding a ReduceMean}."""
    cons = _consumers(proto)
    decomposed = sum(1 for n in proto.graph.node if n.op_type == "Pow"
                     and any(c.op_type == "ReduceMean" for c in cons.get(n.output[0], [])))
    return {"layernorm": sum(n.op_type == "LayerNormalization" for n in proto.graph.node),
            "decomposed": decomposed}


def _constants(proto, base_dir: Path | None):
    """(name, TensorProto) of every initializer and Constant node value."""
    for t in proto.graph.initializer:
        yield t.name, t
    for n in proto.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    yield n.output[0], a.t


def fp16_hazards(proto, base_dir: Path | None = None) -> list[str]:
    """Constants that break fp16: non-finite float16 values, and float32 values beyond +-65504
    that a Cast turns into float16 (`proto` must hold its weights: load_graph(with_data=True))."""
    import numpy as np
    from onnx import numpy_helper

    casts_to_16 = {i for n in proto.graph.node if n.op_type == "Cast"
                   for a in n.attribute if a.name == "to" and a.i == _FLOAT16 for i in n.input}
    out = []
    for name, t in _constants(proto, base_dir):
        if t.data_type not in (_FLOAT, _FLOAT16):
            continue
        a = numpy_helper.to_array(t, base_dir=str(base_dir or ""))
        if a.size == 0:
            continue
        if t.data_type == _FLOAT16 and not np.isfinite(a).all():
            out.append(f"{name}: float16 constant with inf/NaN")
        elif t.data_type == _FLOAT and name in casts_to_16:
            big = float(np.abs(a[np.isfinite(a)]).max(initial=0.0))
            if big > FP16_MAX or not np.isfinite(a).all():
                out.append(f"{name}: float32 constant of magnitude {big:.3g} cast to float16")
    return out


def large_fp32_constants(proto, base_dir: Path | None = None) -> list[str]:
    """float32 constants beyond the fp16 range (fine in an fp32 graph; a reason to keep it fp32)."""
    import numpy as np
    from onnx import numpy_helper

    out = []
    for name, t in _constants(proto, base_dir):
        if t.data_type == _FLOAT:
            a = numpy_helper.to_array(t, base_dir=str(base_dir or ""))
            if a.size and float(np.abs(a).max()) > FP16_MAX:
                out.append(name)
    return out


def capture_precision_problems(proto, skipped: tuple[str, ...] = ()) -> list[str]:
    """Capture outputs of a float16 graph not computed in float32 from their Casts on.

    skipped: outputs the graph returns as zeros (export --skip-cross): float32, no reduction.

    From each capture output, walk back through the producers of floating tensors and stop at a
    Cast to float32: every tensor passed is float32 and at least one Softmax or ReduceMean lies
    in the island (cross / self), so the capture statistics are fp32 in a strongly typed engine.
    """
    import onnx

    model = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    prod = _producers(model)
    problems = []
    for out in model.graph.output:
        if not _CAPTURE.match(out.name):
            continue
        if types.get(out.name) != _FLOAT:
            problems.append(f"{out.name} is not float32")
            continue
        seen, stack, reductions, bad = set(), [out.name], 0, []
        while stack:
            t = stack.pop()
            node = prod.get(t)
            if node is None or t in seen:
                continue
            seen.add(t)
            if node.op_type == "Cast":
                continue  # the island's border (it casts to float32: its output type was checked)
            reductions += node.op_type in ("Softmax", "ReduceMean")
            for i in node.input:
                ty = types.get(i)
                if ty == _FLOAT16:
                    bad.append(f"{node.op_type} {node.name}")
                elif ty == _FLOAT:
                    stack.append(i)
        if bad:
            problems.append(f"{out.name}: float16 inputs inside the fp32 capture ({', '.join(bad[:3])})")
        if out.name.startswith(("cross", "self")) and reductions == 0 and out.name not in skipped:
            problems.append(f"{out.name}: no fp32 Softmax / ReduceMean found in its capture")
    return problems


def check_structure(path: Path, spec_json: dict, precision: str,
                    skipped: tuple[str, ...] = ()) -> tuple[dict, list[str]]:
    """Every check above on one exported graph: (report for the manifest, problems); skipped:
    capture outputs returned as zeros."""
    proto = load_graph(path)
    problems, unknown = shape_problems(proto, spec_json)
    attn = attention_report(proto)
    if attn["fused"] != attn["layers"]:
        problems.append(f"{attn['layers'] - attn['fused']} of {attn['layers']} attention layers lack "
                        "the Mul/MatMul/Softmax/MatMul pattern TensorRT fuses")
    ln = layernorm_report(proto)
    if ln["decomposed"]:
        problems.append(f"{ln['decomposed']} LayerNorms are decomposed (ReduceMean/Pow): export "
                        "with opset >= 17")
    full = load_graph(path, with_data=True)
    report = {"unknown_dims": unknown, "attention": attn, **ln}
    if precision == "fp16":
        hazards = fp16_hazards(full, path.parent)
        problems += hazards + capture_precision_problems(proto, skipped)
        report["fp16_hazards"] = hazards
    else:
        report["beyond_fp16_range"] = large_fp32_constants(full, path.parent)[:8]
    return report, problems
