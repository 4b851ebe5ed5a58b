"""faseg_rt: fast, exact inference runtime for FA-Seg open-vocabulary segmentation.

    from faseg_rt import Segmenter
    seg = Segmenter.from_pretrained("XCLIU/2_rectified_flow_from_sd_1_5")
    res = seg("photo.jpg", classes=["cat", "dog"])

The public classes are imported on first use (PEP 562), so `import faseg_rt` (and with it
`faseg-rt --help` / `--version`) does not import torch.
"""

from typing import TYPE_CHECKING

from faseg_rt.errors import FASegError, InvalidInputError, ModelLoadError
from faseg_rt.version import __version__  # noqa: F401

if TYPE_CHECKING:  # what _LAZY loads, for linters and type checkers (never at run time)
    from faseg_rt.config import FASegConfig
    from faseg_rt.results import SegmentationResult
    from faseg_rt.segmenter import Segmenter

#: name -> module that defines it, imported when the name is first read
_LAZY = {"Segmenter": "faseg_rt.segmenter", "SegmentationResult": "faseg_rt.results",
         "FASegConfig": "faseg_rt.config"}

__all__ = ["Segmenter", "SegmentationResult", "FASegConfig", "FASegError", "InvalidInputError",
           "ModelLoadError", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'faseg_rt' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
