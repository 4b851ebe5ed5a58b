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

    #: the most prompts one text_encoder call takes (an engine profile's max), None: any
    max_prompts: int | None = None
    #: the most latents (2 per image) one unet / unet_attn call takes, None: any
    max_latents: int | None = None
    #: the dtype of every stage (faseg_rt.precision): resolved once, when the backend is made,
    #: from the dtype it was loaded in (None here: resolved in __post_init__)
    precision: PrecisionPolicy | None = None

    def __post_init__(self):
        if self.precision is None:
            self.precision = precision_policy(self.dtype, self.device)

    def check_batch(self, images: int) -> None:
        """Refuse, before any work, more images per call than the engines take."""
        most = self.max_latents
        if most is not None and 2 * images > most:
            raise InvalidInputError(f"batch_size {images} is over what the {self.name} engines take "
                                    f"({most // 2} images per call); pass batch_size={most // 2} or rebuild "
                                    "the engines with larger --batch-sizes")

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
                f"{[config.cross_weights[r] for r in needed]}: load the backend with this config "
                "(exported graphs: export again with --skip-cross none)")
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


def exported_skip_cross(manifest: dict) -> tuple[int, ...]:
    """Resolutions whose class-aware maps the exported unet_attn returns as zeros (the export's
    --skip-cross); Backend.for_config refuses a config that weighs them."""
    return tuple(manifest.get("build_args", {}).get("skip_cross") or ())


def exported_limits(manifest: dict, backend: str) -> dict:
    """{max_prompts, max_latents, max_chunks} of the graphs in `manifest` for `backend`.

    TensorRT: the largest shapes of the engines' profiles (text_encoder's P, unet_attn's N and
    J).  ONNX graphs take any size; their unet_attn is still called with at most the export's
    max_class_chunks chunks at a time (ChunkGroups), so its capture memory stays bounded.
    """
    chunks = int(manifest.get("build_args", {}).get("max_class_chunks") or 4)
    if backend != "tensorrt":
        return {"max_prompts": None, "max_latents": None, "max_chunks": chunks}
    prof = manifest["engines"]["profiles"]
    return {"max_prompts": min(p["input_ids"][2][0] for p in prof["text_encoder"]),
            "max_latents": min(p["latents"][2][0] for p in prof["unet_attn"]),
            "max_chunks": min(p["class_hidden_states"][2][1] for p in prof["unet_attn"])}


class ChunkGroups:
    """unet_attn for any number J of class-prompt chunks, calling `runner` with at most
    `max_chunks` of them at a time (an engine profile's limit, and the bound on the capture's
    (N, j, heads, r*r, 77) logits an exported graph computes in one block).

    The self-attention summaries and q / k do not depend on the class prompts (the keys that
    flow through the UNet are the full prompt's), so they come from the first group; the
    cross_{r} maps of the groups are concatenated along J.  Each further group costs one more
    UNet pass: vocabularies up to max_chunks x 25 classes take one.
    """

    def __init__(self, runner: Runner, max_chunks: int):
        if max_chunks < 1:
            raise EngineError(f"max_chunks must be positive, got {max_chunks}")
        self.runner = runner
        self.max_chunks = max_chunks

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        cs = inputs["class_hidden_states"]                                # (N, J, 77, D)
        g = self.max_chunks
        if cs.shape[1] <= g:
            return self.runner(**inputs)
        outs = [self.runner(**dict(inputs, class_hidden_states=cs[:, j:j + g])) for j in range(0, cs.shape[1], g)]
        return {k: torch.cat([o[k] for o in outs], dim=1) if k.startswith("cross_") else v
                for k, v in outs[0].items()}
