"""Loading an SD 1.x model directory or hub id, and checking it has the layout FA-Seg needs."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from faseg_rt.errors import ModelLoadError
from faseg_rt.hub import locate, quiet_loading

log = logging.getLogger(__name__)

COMPONENTS = ("vae", "text_encoder", "tokenizer", "unet")


@dataclass(frozen=True)
class ModelDims:
    """Sizes read off a loaded SD 1.x model, needed to declare graph shapes."""

    text_len: int = 77           # tokenizer.model_max_length
    text_dim: int = 768          # text_encoder hidden size == unet cross_attention_dim
    latent_channels: int = 4
    latent_size: int = 64
    image_size: int = 512
    full_res_heads: int = 40     # self-attention layers x heads at the full latent resolution
    full_res_head_dim: int = 40
    scaling_factor: float = 0.18215

    @property
    def resolutions(self) -> tuple[int, ...]:
        s = self.latent_size
        return (s // 8, s // 4, s // 2, s)


def resolve_model(model: str | os.PathLike) -> str:
    """A local SD 1.x directory for `model`, or its hub id when it can be downloaded now.

    Fails fast, in one line, for a directory missing a component, an unknown or gated id, or a
    model that cannot be downloaded here (see faseg_rt.hub.locate)."""
    return locate(model, "SD model", required=tuple(f"{c}/" for c in COMPONENTS))


#: A model directory may carry the method's constants for the picture size it was trained at
#: (a model for 128 px pictures has latent 16, not SD's 64): FASegConfig fields as JSON, read
#: when the caller gives no config.
CONFIG_FILE = "faseg_config.json"


def model_config(model: str | os.PathLike):
    """The FASegConfig in `model`'s CONFIG_FILE when `model` is a local directory holding one,
    else None (then the defaults, SD 1.5's 512 px, apply).  A malformed file is one
    InvalidInputError naming it."""
    path = os.path.join(os.fspath(model), CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    from faseg_rt.config import FASegConfig

    return FASegConfig.from_json(path)


def check_model_dir(model: str | os.PathLike) -> None:
    """Raise ModelLoadError when `model` cannot be loaded here (see `resolve_model`)."""
    resolve_model(model)


def _load(cls, model, subfolder, **kw):
    try:
        with quiet_loading():
            return cls.from_pretrained(model, subfolder=subfolder, **kw)
    except (OSError, ValueError, EnvironmentError, KeyError) as e:
        raise ModelLoadError(f"cannot load {subfolder} of {model}: {e}") from None


def load_tokenizer(model):
    from transformers import CLIPTokenizer

    return _load(CLIPTokenizer, resolve_model(model), "tokenizer")


def load_modules(model, dtype: torch.dtype = torch.float32):
    """(vae, text_encoder, unet) from `model`, in eval mode, in `dtype`, on the CPU."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    model = resolve_model(model)
    vae = _load(AutoencoderKL, model, "vae", torch_dtype=dtype)
    text_encoder = _load(CLIPTextModel, model, "text_encoder", torch_dtype=dtype)
    unet = _load(UNet2DConditionModel, model, "unet", torch_dtype=dtype)
    for m in (vae, text_encoder, unet):
        m.eval().requires_grad_(False)
    check_layout(vae, text_encoder, unet, model)
    return vae, text_encoder, unet


def check_layout(vae, text_encoder, unet, model="model") -> None:
    cfg = unet.config
    problems = []
    if cfg.cross_attention_dim != text_encoder.config.hidden_size:
        problems.append(f"unet cross_attention_dim {cfg.cross_attention_dim} != text encoder "
                        f"hidden size {text_encoder.config.hidden_size}")
    if list(cfg.down_block_types) != ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"]:
        problems.append(f"unet down blocks {list(cfg.down_block_types)} are not SD 1.x's "
                        "(3 x CrossAttnDownBlock2D + DownBlock2D)")
    if cfg.in_channels != vae.config.latent_channels:
        problems.append("unet in_channels != vae latent_channels")
    if len(vae.config.block_out_channels) != 4:
        problems.append("the VAE does not downsample by 8")
    if problems:
        raise ModelLoadError(f"{model} is not an SD 1.x-architecture model: " + "; ".join(problems))


def model_dims(vae, text_encoder, unet, tokenizer_len: int = 77, latent_size: int = 64) -> ModelDims:
    """Graph dimensions of a loaded model at the method's fixed 512-pixel input."""
    cfg = unet.config
    heads = cfg.attention_head_dim  # SD 1.x configs store the head count under this name
    if isinstance(heads, (list, tuple)):
        heads = heads[0]
    width = cfg.block_out_channels[0]
    # self-attention layers at the full resolution: down block 0 and the last up block
    n_layers = cfg.layers_per_block + (cfg.layers_per_block + 1)
    if isinstance(cfg.transformer_layers_per_block, (list, tuple)):
        depth = cfg.transformer_layers_per_block[0]
    else:
        depth = cfg.transformer_layers_per_block
    return ModelDims(
        text_len=tokenizer_len, text_dim=text_encoder.config.hidden_size,
        latent_channels=vae.config.latent_channels, latent_size=latent_size, image_size=latent_size * 8,
        full_res_heads=n_layers * depth * heads, full_res_head_dim=width // heads,
        scaling_factor=float(vae.config.scaling_factor))
