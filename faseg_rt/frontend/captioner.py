"""Captioner: BLIP captions for images, the UNet prompt P that FA-Seg expects with every image.

    cap = Captioner.from_pretrained()                  # Salesforce/blip-image-captioning-large
    cap(["street.jpg", pil_image])                     # -> ["a busy street with cars", ...]

The published FA-Seg results use BLIP (version 1) captions, so the default is the large BLIP
captioning checkpoint, run through transformers' `BlipForConditionalGeneration.generate`.
Generation settings are explicit (CAPTION_SETTINGS: greedy search, 20 new tokens, one caption
per image: what BLIP-large gives through transformers' defaults and what the published captions
show), set over the checkpoint's `generation_config`, so neither a transformers upgrade nor a
checkpoint's shipped config changes the captions.  Any field is overridable
(`generation={"num_beams": 3, "max_new_tokens": 30}`); sampling and more than one caption per
image are refused, so a caption is a function of the image and the settings alone.
Images are captioned `batch_size` at a time on one device; every image gets the same
(unpadded) decoder prompt, so a batch gives the captions it would give one image at a time.
"""

from __future__ import annotations

import copy
import os
import threading
from typing import Mapping, Sequence

import torch

from faseg_rt.devices import default_device_dtype
from faseg_rt.errors import InvalidInputError
from faseg_rt.images import load_image
from faseg_rt.frontend.base import FrontEndModel
from faseg_rt.frontend.checkpoints import checkpoint_dir, load, model_type
from faseg_rt.frontend.defaults import DEFAULT_CAPTIONER  # noqa: F401 (re-exported)

_SUPPORTED = {"blip": "BLIP (BlipForConditionalGeneration)"}

#: The generation settings every caption is made with unless overridden (module docstring).
CAPTION_SETTINGS = {"do_sample": False, "num_beams": 1, "max_new_tokens": 20,
                    "num_return_sequences": 1}


class Captioner(FrontEndModel):
    """BLIP image captioning on one device, batched, deterministic.

    model: a `BlipForConditionalGeneration` in eval mode; processor: its `BlipProcessor`.
    generation: overrides of the checkpoint's generation config (field -> value).
    prompt: optional text the caption must start with (BLIP's conditional captioning, e.g.
        "a picture of"); it is removed from the returned caption.
    name: the id or directory it came from (recorded beside masks).
    """

    def __init__(self, model, processor, *, generation: Mapping | None = None,
                 prompt: str | None = None, name: str | None = None):
        self.model = model.eval().requires_grad_(False)
        self.processor = processor
        self.name = name
        self.prompt = " ".join(prompt.split()) if prompt else None
        self.generation_config = _generation_config(model.generation_config, generation or {})
        self._lock = threading.Lock()  # the tokenizer is not thread-safe (shared padding state)
        if self.prompt:
            self._check_prompt_length()

    def _check_prompt_length(self) -> None:
        """A prompt as long as max_length (with no max_new_tokens) leaves no room for a caption."""
        config = self.generation_config
        if config.max_new_tokens is not None:
            return
        n = len(self.processor.tokenizer([self.prompt])["input_ids"][0])
        if n >= config.max_length:
            raise InvalidInputError(
                f"the caption prompt {self.prompt!r} is {n} tokens, max_length {config.max_length} "
                "leaves no room for a caption: raise max_length or set max_new_tokens instead")

    @classmethod
    def from_pretrained(cls, id_or_dir: str | os.PathLike = DEFAULT_CAPTIONER, *, device=None,
                        dtype=None, generation: Mapping | None = None,
                        prompt: str | None = None) -> "Captioner":
        """Load a BLIP captioning checkpoint (hub id or save_pretrained directory).

        device / dtype default as for `Segmenter` (CUDA + fp16 when available, else CPU + fp32).
        """
        from transformers import BlipForConditionalGeneration, BlipProcessor

        device, dtype = default_device_dtype(device, dtype)
        path = checkpoint_dir(id_or_dir, "captioner")
        model_type(path, "captioner", _SUPPORTED)
        processor = load(BlipProcessor, path, "captioner processor")
        model = load(BlipForConditionalGeneration, path, "captioner", dtype=dtype)
        return cls(model.to(device), processor, generation=generation, prompt=prompt,
                   name=str(id_or_dir))

    @staticmethod
    def check(id_or_dir) -> None:
        """Raise ModelLoadError unless id_or_dir is a reachable BLIP checkpoint (config only)."""
        model_type(checkpoint_dir(id_or_dir, "captioner"), "captioner", _SUPPORTED)

    def pixel_values(self, images: Sequence) -> torch.Tensor:
        """(B, 3, S, S) pixels for the vision encoder, on the model's device and dtype."""
        pil = [load_image(x) for x in images]
        pixels = self.processor.image_processor(images=pil, return_tensors="pt")["pixel_values"]
        return pixels.to(device=self.device, dtype=self.dtype)

    def generate(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) for (B, 3, S, S) pixels: transformers' generate with our settings."""
        kwargs = {}
        if self.prompt:
            with self._lock:
                ids = self.processor.tokenizer([self.prompt], return_tensors="pt")["input_ids"]
            kwargs["input_ids"] = ids.repeat(pixel_values.shape[0], 1).to(self.device)
        with torch.inference_mode():
            return self.model.generate(pixel_values=pixel_values,
                                       generation_config=self.generation_config, **kwargs)

    def __call__(self, images: Sequence, batch_size: int = 8) -> list[str]:
        """One caption per image (paths, PIL images, arrays or encoded bytes), in order."""
        images = self._check_batch(images, batch_size, "Captioner")
        out: list[str] = []
        for start in range(0, len(images), batch_size):
            ids = self.generate(self.pixel_values(images[start:start + batch_size]))
            out += [self._clean(t) for t in self.processor.batch_decode(ids, skip_special_tokens=True)]
        return out

    def _clean(self, text: str) -> str:
        text = " ".join(text.split())
        if self.prompt and text.lower().startswith(self.prompt.lower()):
            text = text[len(self.prompt):].strip()
        return text


def _generation_config(base, overrides: Mapping):
    """The checkpoint's generation config with CAPTION_SETTINGS, then `overrides`, applied;
    sampling and several captions per image are refused.  An override of max_length alone
    replaces the default max_new_tokens (which would take precedence over it)."""
    from transformers import GenerationConfig

    if not isinstance(overrides, Mapping):
        raise InvalidInputError(f"generation must be a dict of generate() settings, got "
                                f"{type(overrides).__name__}")
    known = GenerationConfig().to_dict()
    unknown = sorted(k for k in overrides if k not in known)
    if unknown:
        raise InvalidInputError(f"unknown generation setting(s) {', '.join(unknown)}; use fields of "
                                "transformers.GenerationConfig such as num_beams, max_new_tokens")
    if overrides.get("do_sample"):
        raise InvalidInputError("the captioner is deterministic: do_sample=True is not supported "
                                "(use num_beams for a wider search)")
    if overrides.get("num_return_sequences", 1) != 1:
        raise InvalidInputError("the captioner gives one caption per image: num_return_sequences "
                                f"must be 1, got {overrides['num_return_sequences']!r} (num_beams "
                                "widens the search and still returns the best one)")
    settings = dict(CAPTION_SETTINGS)
    if "max_length" in overrides and "max_new_tokens" not in overrides:
        settings["max_new_tokens"] = None
    settings.update(overrides)
    config = copy.deepcopy(base)
    config.update(**settings)
    return config
