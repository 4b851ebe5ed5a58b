"""ONNX export and the structure checks on hand-made graphs of a few nodes: cheap, the fast tier
(test_export.py exports the whole tiny model, the slow tier)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from faseg_rt.engines import build as ex
from faseg_rt.engines.graphs import GraphSpec, TensorSpec


def test_external_data_graph_passes_checker_and_matches():
    """Graphs over 2 GB keep their weights in one .data file; forced here with threshold 0."""
    spec = GraphSpec("toy", (TensorSpec("latents", ("N", 4, 8, 8), "float32"),),
                     (TensorSpec("eps", ("N", 4, 8, 8), "float32"),))
    module = torch.nn.Sequential(torch.nn.Conv2d(4, 16, 3, padding=1), torch.nn.SiLU(),
                                 torch.nn.Conv2d(16, 4, 3, padding=1)).eval()
    with tempfile.TemporaryDirectory() as d:
        files = ex.export_onnx(module, spec, None, Path(d), 17, external_threshold=0)
        assert [f.name for f in files] == ["toy.onnx", "toy.onnx.data"]
        assert files[1].stat().st_size > files[0].stat().st_size
        check = ex.check_onnx(module, spec, None, files[0], sizes={"N": 3})
        assert check["max_abs_error"]["eps"] < 1e-5


def test_structure_checks_find_what_tensorrt_would_trip_on():
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from faseg_rt.engines.onnx_checks import fp16_hazards, layernorm_report, shape_problems

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])
    # LayerNorm decomposed the opset-14 way: ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    eps = numpy_helper.from_array(np.array(1e-5, np.float32), "eps")
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1]), helper.make_node("Sub", ["x", "m"], ["c"]),
             helper.make_node("Pow", ["c", "two"], ["p"]), helper.make_node("ReduceMean", ["p"], ["v"], axes=[-1]),
             helper.make_node("Add", ["v", "eps"], ["ve"]), helper.make_node("Sqrt", ["ve"], ["s"]),
             helper.make_node("Div", ["c", "s"], ["y"])]
    ln = helper.make_model(helper.make_graph(nodes, "ln", [x], [y], [two, eps]),
                           opset_imports=[helper.make_opsetid("", 17)])
    assert layernorm_report(ln) == {"layernorm": 0, "decomposed": 1}
    # a batch the trace baked in: Reshape to a constant (2, 8) leaves the output's N underived
    shape = numpy_helper.from_array(np.array([2, 8], np.int64), "shape")
    baked = helper.make_model(helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "baked",
                                                [x], [y], [shape]), opset_imports=[helper.make_opsetid("", 17)])
    problems, _ = shape_problems(baked, {"outputs": [{"name": "y", "shape": ["N", 8]}]})
    assert problems and "inferred shape [2, 8]" in problems[0]
    # fp16 range: an inf fp16 weight, and a float32 -3.4e38 mask cast to fp16
    big = numpy_helper.from_array(np.array([np.finfo(np.float32).min], np.float32), "mask")
    inf16 = numpy_helper.from_array(np.array([np.inf], np.float16), "w16")
    g = helper.make_graph([helper.make_node("Cast", ["mask"], ["m16"], to=TensorProto.FLOAT16),
                           helper.make_node("Add", ["m16", "w16"], ["z"])], "fp16", [],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT16, [1])], [big, inf16])
    hazards = fp16_hazards(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    assert any(h.startswith("w16: float16 constant with inf") for h in hazards)
    assert any(h.startswith("mask: float32 constant of magnitude 3.4e+38") for h in hazards), hazards
    onnx.checker.check_model(ln)
