"""What the captioner and the recogniser share: one transformers model on one device and dtype,
and the same checks of a batch of images."""

from __future__ import annotations

import os

import torch

from faseg_rt import rules
from faseg_rt.devices import default_device_dtype
from faseg_rt.errors import InvalidInputError


class FrontEndModel:
    """Base of Captioner and Recognizer: `self.model` is a transformers model in eval mode."""

    model: torch.nn.Module

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def to(self, device, dtype: torch.dtype | None = None):
        """Move to another device / dtype (defaults as for Segmenter); returns self."""
        device, dtype = default_device_dtype(device, dtype or self.dtype)
        self.model.to(device=device, dtype=dtype)
        self._moved()
        return self

    def _moved(self) -> None:
        """Hook: drop whatever was cached on the old device."""

    @staticmethod
    def _check_batch(images, batch_size, who: str) -> list:
        """`images` as a list; refuses a lone image and a batch size that is not an int >= 1."""
        if isinstance(images, (str, os.PathLike, bytes)) or not hasattr(images, "__len__"):
            raise InvalidInputError(f"{who} takes a list of images; wrap one image in [ ]")
        rules.batch_size(batch_size)
        return list(images)
