"""What both TensorRT engine builds and the TensorRT backend need before touching an engine: the
supported-version gate and the process's one TensorRT logger.

It sits with the backends (the lower layer), so loading engines at run time does not import the
engine build code; engines/tensorrt_build.py imports it from here.
"""

from __future__ import annotations

import torch

from faseg_rt.errors import BackendUnavailableError

#: TensorRT versions this code is written against: [10.12, 12).  10.12 deprecated weak typing
#: (strongly typed networks carry the precision); 11.0 removed it.
SUPPORTED_TENSORRT = ((10, 12), (12, 0))
INSTALL = "pip install -e '.[tensorrt]' (tensorrt-cu12>=10.12,<12; tensorrt-cu13 for a CUDA 13 torch)"
NO_CUDA = ("TensorRT needs a CUDA GPU and " + INSTALL + "; {why}. "
           "Here, export with --onnx-only and use backend='onnxruntime'")


def check_tensorrt_version(version: str) -> None:
    """Refuse, in one line, a TensorRT outside SUPPORTED_TENSORRT."""
    try:
        major, minor = (int(x) for x in str(version).split(".")[:2])
    except ValueError:
        raise BackendUnavailableError(f"cannot read the tensorrt version {version!r}; {INSTALL}") from None
    lo, hi = SUPPORTED_TENSORRT
    if not lo <= (major, minor) < hi:
        raise BackendUnavailableError(
            f"tensorrt {version} is not supported: faseg_rt needs TensorRT {lo[0]}.{lo[1]} to "
            f"{hi[0] - 1}.x (strongly typed fp16 graphs); {INSTALL}")


def require_tensorrt():
    """The tensorrt module, or BackendUnavailableError saying why not (no CUDA GPU, not
    installed, or a version outside SUPPORTED_TENSORRT)."""
    if not torch.cuda.is_available():
        raise BackendUnavailableError(NO_CUDA.format(why="no CUDA GPU is visible to torch on this machine"))
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailableError(NO_CUDA.format(why="the tensorrt package is not installed")) from None
    check_tensorrt_version(trt.__version__)
    return trt


def trt_logger():
    """The one TensorRT logger of the process (polygraphy's), shared by builders and runtimes:
    TensorRT warns when loggers differ."""
    from polygraphy.backend.trt import util as trt_util

    return trt_util.get_trt_logger()
