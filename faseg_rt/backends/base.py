"""The backend protocol: four named-tensor runners plus the facts the method code needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from faseg_rt.model import ModelDims
from faseg_rt.errors import EngineError, InvalidInputError
from faseg_rt.precision import PrecisionPolicy, precision_policy


class Runner(Protocol):
    """One network stage: `runner(**inputs) -> {output name: tensor}` (names from graph_specs)."""

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]: ...


@dataclass
class Backend:
    """What the method code gets: where tensors live, the model's dimensions, and four runners.

    vae_encoder:  pixels -> moments
    text_encoder: input_ids -> last_hidden_state
    unet:         latents, timestep, encoder_hidden_states -> eps
    unet_attn:    latents, timestep, encoder_hidden_states, class_hidden_states -> summaries

    Each implementation has to(device, dtype) for Segmenter.to: TorchBackend moves its modules,
    ExportedBackend refuses in one line (its graphs are built for one device and precision).
    """

    name: str
    device: torch.device
    dtype: torch.dtype
    dims: ModelDims
    vae_encoder: Runner
    text_encoder: Runner
    unet: Runner
    unet_attn: Runner
    #: latent resolutions whose class-aware maps `unet_attn` returns as zeros (not computed)
    skip_cross: tuple = ()

    @property
    def precision(self) -> PrecisionPolicy:
        """The dtype of every stage (faseg_rt.precision), from the dtype the backend was loaded in."""
        return precision_policy(self.dtype, self.device)

    def for_config(self, config) -> "Backend":
        """A backend that computes every output `config` reads: this one, or InvalidInputError.

        A segmenter calls it with its own config, so a shared backend never hands it zeros in
        place of maps its weights need, nor a latent grid of another size."""
        if self.dims.latent_size != config.latent_size:
            raise InvalidInputError(
                f"the {self.name} backend was loaded for latent size {self.dims.latent_size}, the "
                f"segmenter's config asks for {config.latent_size}: load the backend with this config")
        needed = sorted(r for r in self.skip_cross if config.cross_weights.get(r, 0))
        if needed:
            raise InvalidInputError(
                f"the {self.name} backend does not compute the class-aware maps at resolution(s) "
                f"{needed}, which the segmenter's config weighs by "
                f"{[config.cross_weights[r] for r in needed]}: load the backend with this config")
        return self


@dataclass
class ExportedBackend(Backend):
    """A backend that runs graphs / engines exported by export/build_engines.py into `engines`.

    They are loaded for one device and dtype, so `to` refuses (load again instead)."""

    engines: Path | None = None
    manifest: dict | None = None

    def to(self, device, dtype=None) -> "ExportedBackend":
        raise InvalidInputError(f"the {self.name} backend cannot move to another device or dtype after "
                                "loading; call Segmenter.from_pretrained again with device= / dtype=")


def check_latent_size(dims: ModelDims, config, engines) -> ModelDims:
    """`dims` (from a manifest) if the export's latent size is the one `config` asks for."""
    if dims.latent_size != config.latent_size:
        raise EngineError(f"the graphs in {engines} were exported for latent size {dims.latent_size}, "
                          f"the config asks for {config.latent_size}")
    return dims
