"""faseg_rt: fast, exact inference runtime for FA-Seg open-vocabulary segmentation.

    from faseg_rt import Segmenter
    seg = Segmenter.from_pretrained("XCLIU/2_rectified_flow_from_sd_1_5")
    res = seg("photo.jpg", classes=["cat", "dog"])
"""

from faseg_rt.version import __version__  # noqa: E402,F401
from faseg_rt.config import FASegConfig  # noqa: E402
from faseg_rt.errors import FASegError, InvalidInputError, ModelLoadError  # noqa: E402
from faseg_rt.results import SegmentationResult  # noqa: E402
from faseg_rt.segmenter import Segmenter  # noqa: E402

__all__ = ["Segmenter", "SegmentationResult", "FASegConfig", "FASegError", "InvalidInputError",
           "ModelLoadError", "__version__"]
