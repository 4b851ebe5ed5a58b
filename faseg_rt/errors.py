"""The package's exceptions: one base type, so callers (and the CLI) can catch ours alone.

`InvalidInputError` subclasses ValueError because every case is a bad argument value (an image
that is not an image, an empty class list, a threshold outside [0, 1]).
"""


class FASegError(Exception):
    """Base of every error faseg_rt raises on purpose; the message says what to do."""


class InvalidInputError(FASegError, ValueError):
    """An image, class list, caption or option that the method cannot take."""


class ModelLoadError(FASegError, ValueError):
    """A model directory / hub id that is not a usable SD 1.x layout."""


class EngineError(FASegError):
    """Exported graphs or engines that are missing, corrupt or built for something else."""


class BackendUnavailableError(FASegError):
    """A backend whose packages or hardware are not present (e.g. TensorRT without CUDA)."""


class EngineMismatchError(EngineError):
    """Exported graphs / engines whose manifest disagrees with the model, installation or GPU.

    The message lists what differs and the build_engines command that rebuilds them.
    """
