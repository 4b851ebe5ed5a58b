"""The old name of faseg_rt.frontend.input_files, kept only while faseg_rt/scale/worker.py (being
changed on another branch) still imports image_key from here; delete it once that import reads
`from faseg_rt.frontend.input_files import image_key`."""

from faseg_rt.frontend.input_files import image_key

__all__ = ["image_key"]
