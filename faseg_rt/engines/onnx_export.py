"""ONNX export of the four graphs (engines/graphs.py modules), each checked against PyTorch in
ONNX Runtime on random inputs of other sizes than the trace's.

fp16 graphs are traced from the fp16 modules (on the CPU), as NVIDIA's diffusion demo traces
them on the GPU: the precision is then in the graph, and the attention capture's casts to the
policy's capture dtype (faseg_rt.precision: float32) become real Casts, so a strongly typed
TensorRT engine computes the capture in fp32 exactly as the torch backend does.  They are
checked against the same fp16 modules in PyTorch."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from faseg_rt.errors import EngineError

from faseg_rt.engines.tolerance import TOLERANCES
from faseg_rt.engines.tolerance import check as within_tolerance

#: Check tolerance per output (engines/tolerance.py's rule): fp32 graphs vs fp32 torch, and fp16
#: graphs vs the fp16 modules (on the tiny model the largest gap is 0.7 % of an output's max).
(ATOL, RTOL), (ATOL16, RTOL16) = TOLERANCES["fp32"], TOLERANCES["fp16"]

#: Above this many bytes a graph is saved with its weights in one external data file (protobuf
#: cannot hold more than 2 GiB).
EXTERNAL_DATA_THRESHOLD = 2 * 1024**3 - 64 * 1024**2


def graph_modules(model, dtype=None, latent_size: int = 64, skip_cross: tuple[int, ...] = ()):
    """The graphs.py modules of `model` in `dtype` (default fp32) on the CPU, their specs and the
    model dims for latent_size x latent_size latents (unet_attn returning zeros for the class-aware
    maps of the resolutions in skip_cross)."""
    import torch

    from faseg_rt.engines.graphs import (
        TextEncoderGraph,
        UNetAttnGraph,
        UNetGraph,
        VaeEncoderGraph,
        graph_specs,
    )
    from faseg_rt.method.attention import install_processors
    from faseg_rt.model import load_modules, model_dims
    from faseg_rt.precision import stage_dtype

    dtype = dtype or torch.float32
    vae, te, unet = load_modules(model, dtype=dtype)
    install_processors(unet)
    dims = model_dims(vae, te, unet, latent_size=latent_size)
    mods = {"text_encoder": TextEncoderGraph(te), "vae_encoder": VaeEncoderGraph(vae),
            "unet": UNetGraph(unet),
            "unet_attn": UNetAttnGraph(unet, dims.resolutions, skip_cross, stage_dtype("capture", dtype))}
    return mods, graph_specs(dims, str(dtype).removeprefix("torch.")), dims


def example_inputs(spec, dims, sizes: dict, seed: int = 0) -> dict:
    """Random inputs for a graph, with the named dimensions set from `sizes` (N, J, P)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for ts in spec.inputs:
        shape = tuple(sizes[d] if isinstance(d, str) else d for d in ts.shape)
        if ts.name == "input_ids":
            out[ts.name] = torch.randint(0, 49408, shape, generator=g, dtype=torch.int64)
        elif ts.name == "timestep":
            out[ts.name] = torch.tensor([1], dtype=torch.int64)  # the method's inversion timestep
        elif ts.name == "pixels":
            out[ts.name] = torch.rand(shape, generator=g) * 2 - 1
        else:
            out[ts.name] = torch.randn(shape, generator=g)
        if out[ts.name].is_floating_point():
            out[ts.name] = out[ts.name].to(getattr(torch, ts.dtype))
    return out


def dynamic_axes(spec) -> dict:
    """ONNX dynamic axes: every named dimension (N, J, P) of every input and output."""
    axes = {}
    for ts in spec.inputs + spec.outputs:
        named = {i: d for i, d in enumerate(ts.shape) if isinstance(d, str)}
        if named:
            axes[ts.name] = named
    return axes


def export_onnx(module, spec, dims, workdir: Path, opset: int,
                external_threshold: int = EXTERNAL_DATA_THRESHOLD, file: str | None = None) -> list[Path]:
    """Trace `module` to workdir/<file> (default <name>.onnx; + <file>.data when large); returns
    the files."""
    import onnx
    import torch

    raw = workdir / "raw"
    raw.mkdir()
    path = raw / f"{spec.name}.onnx"
    inputs = example_inputs(spec, dims, {"N": 2, "J": 2, "P": 2})
    import warnings

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # the tracer's warnings about Python-level shape asserts; torch's notice that this is the
        # TorchScript exporter (chosen on purpose: the torch.export-based one fixes the UNet's
        # batch dimension, docs/export.md), the deprecations of that exporter's own helpers and its
        # note on Slice ops it leaves unfolded; every other warning is shown
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX export",
                                DeprecationWarning)
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1 can be constant folded",
                                UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                module=r"torch\.onnx\._internal\.torchscript_exporter")
        torch.onnx.export(module, tuple(inputs[n] for n in spec.input_names), str(path),
                          input_names=spec.input_names, output_names=spec.output_names,
                          dynamic_axes=dynamic_axes(spec), opset_version=opset, dynamo=False,
                          do_constant_folding=True)
    final = workdir / (file or path.name)
    size = sum(p.stat().st_size for p in raw.iterdir())
    if size > external_threshold or len(list(raw.iterdir())) > 1:
        proto = onnx.load(str(path), load_external_data=True)
        onnx.save_model(proto, str(final), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{final.name}.data", size_threshold=1024)
        files = [final, workdir / f"{final.name}.data"]
    else:
        os.replace(path, final)
        files = [final]
    shutil.rmtree(raw)
    try:
        onnx.checker.check_model(str(final))
    except onnx.checker.ValidationError as e:
        raise EngineError(f"onnx.checker rejects the exported {spec.name} graph: {e}") from None
    return files


def check_onnx(module, spec, dims, path: Path, sizes=None) -> dict:
    """Run the graph in ONNX Runtime (CPU) and the module in PyTorch on the same random inputs.

    The sizes differ from the trace's (N=2, J=2, P=2), so the dynamic axes are exercised too.
    Returns {max_abs_error, tolerance, batch}; raises EngineError above tolerance.
    """
    import onnxruntime as ort
    import torch

    sizes = sizes or {"N": 1, "J": 1, "P": 3}
    inputs = example_inputs(spec, dims, sizes, seed=1)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(spec.output_names, {k: v.numpy() for k, v in inputs.items()})
    with torch.no_grad():
        ref = module(*(inputs[n] for n in spec.input_names))
    if isinstance(ref, torch.Tensor):
        ref = (ref,)
    atol, rtol = (ATOL16, RTOL16) if spec.inputs and any(t.dtype == "float16" for t in spec.inputs) \
        else (ATOL, RTOL)
    errors, tols, bad = {}, {}, []
    for name, g, r in zip(spec.output_names, got, ref):
        r = r.float().numpy()
        if g.shape != r.shape:
            bad.append(f"{name}: shape {g.shape} vs PyTorch {r.shape}")
            continue
        c = within_tolerance(g, r, atol, rtol)
        errors[name], tols[name], err, tol = c["max_abs"], c["tolerance"], c["max_abs"], c["tolerance"]
        if not c["passed"]:
            bad.append(f"{name}: max abs error {err:.3g} > tolerance {tol:.3g}")
    if bad:
        raise EngineError(f"the exported {spec.name} graph does not match PyTorch on random inputs "
                          f"({sizes}): " + "; ".join(bad) + ". Nothing was installed; this is a bug "
                          "in the export (or an unsupported model), please report it.")
    return {"max_abs_error": errors, "tolerance": tols, "sizes": sizes}
