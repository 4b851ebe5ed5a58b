"""An SD 1.5-shaped model with random weights, built offline, for tests, benchmarks and the demo,
and the small config (`small_config`, a 64 px grid by default) they run it at.

Same block layout as SD 1.5 (3 x CrossAttnDownBlock2D + DownBlock2D, layers_per_block 2, so 5
attention layers at latent 64, 32 and 16 and one in the mid block at 8; 8 heads; an 8x VAE;
a CLIP text model with 77 positions), saved with save_pretrained and loaded back through the
same from_pretrained as a real checkpoint.  `full=True` uses SD 1.5's real widths.

Attention query/key weights are multiplied by `sharpen` (default 3, logits x 9): with plain
random init the attention is almost uniform and masks are rounding noise (spec, "Testing with
random weights").  The tokenizer is a CLIPTokenizer with a CLIP-format BPE vocabulary built here
(clip_vocab.py): no download, no extra package.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from faseg_rt.hub import quiet_loading
from faseg_rt.testing.clip_vocab import clip_vocabulary

# The tiny model has 2 attention heads instead of SD 1.5's 8: on a CPU the cost of attention over
# 4096 latent tokens grows with the head count, and two heads still exercise head averaging.
TINY = dict(unet_channels=(32, 32, 64, 64), heads=2, text_dim=32, text_layers=2, text_heads=4,
            vae_channels=(8, 16, 16, 16), norm_groups=8, vae_groups=4)
FULL = dict(unet_channels=(320, 640, 1280, 1280), heads=8, text_dim=768, text_layers=12,
            text_heads=12, vae_channels=(128, 256, 512, 512), norm_groups=32, vae_groups=32)


def write_clip_tokenizer(out_dir: str | os.PathLike) -> Path:
    """Write a CLIPTokenizer (vocab.json, merges.txt, configs; 77 positions) with the vocabulary of
    clip_vocab.py, loadable with CLIPTokenizer.from_pretrained like a real checkpoint's."""
    from transformers import CLIPTokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocabulary()
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False),
                                    encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                    encoding="utf-8")
    tok = CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), model_max_length=77,
                        pad_token="<|endoftext|>", bos_token="<|startoftext|>",
                        eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.save_pretrained(out)
    return out


def tiny_modules(widths: dict, *, seed: int = 0, sharpen: float = 3.0, full: bool = False):
    """(unet, vae, text_encoder) of the SD 1.5 block layout with the widths of `widths` (TINY,
    FULL or a variant), seeded; attention query/key weights multiplied by `sharpen`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    w = widths
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=w["unet_channels"],
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=w["text_dim"], attention_head_dim=w["heads"], norm_num_groups=w["norm_groups"])
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=512, layers_per_block=1 if not full else 2,
        block_out_channels=w["vae_channels"], norm_num_groups=w["vae_groups"],
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        scaling_factor=0.18215)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=w["text_dim"], intermediate_size=4 * w["text_dim"],
        num_hidden_layers=w["text_layers"], num_attention_heads=w["text_heads"],
        max_position_embeddings=77, projection_dim=w["text_dim"], hidden_act="quick_gelu",
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if name.endswith(("to_q.weight", "to_k.weight")):
                p.mul_(sharpen)
    return unet, vae, text_encoder


def build_tiny_model(out_dir: str | os.PathLike, *, full: bool = False, seed: int = 0,
                     sharpen: float = 3.0) -> Path:
    """Build and save an SD 1.5-shaped random model under out_dir; returns the directory.

    Idempotent: an existing complete model directory (model_index.json present) is reused.
    """
    out = Path(out_dir)
    if (out / "model_index.json").exists():
        return out
    unet, vae, text_encoder = tiny_modules(FULL if full else TINY, seed=seed, sharpen=sharpen, full=full)
    save_model(out, unet, vae, text_encoder, {"full": full, "seed": seed, "sharpen": sharpen})
    return out


def save_model(out: Path, unet, vae, text_encoder, provenance: dict) -> Path:
    """Write a diffusers SD model directory (DDIM scheduler of the spec, the test tokenizer) from
    the three modules, atomically (a .partial directory renamed at the end)."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)

    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with quiet_loading():  # no "Writing model shards" bars
        unet.save_pretrained(tmp / "unet")
        vae.save_pretrained(tmp / "vae")
        text_encoder.save_pretrained(tmp / "text_encoder")
        scheduler.save_pretrained(tmp / "scheduler")
        write_clip_tokenizer(tmp / "tokenizer")
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
             "faseg_rt_test_model": provenance,
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "scheduler": ["diffusers", "DDIMScheduler"]}
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


#: The parity photographs: (image seed, width, height, classes, caption); odd sizes exercise the
#: final nearest resize.  Tests (conftest.py) and the precision benchmark use them.
PARITY_CASES = [
    (1, 96, 64, ["cat", "potted plant", "aeroplane"], "a photo of a room"),
    (2, 50, 70, ["dog", "grass", "sky", "red car"], None),
]


def synthetic_image(width: int = 96, height: int = 64, seed: int = 0):
    """A small RGB picture of coloured shapes (PIL), for tests and the demo."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
        x1, y1 = x0 + int(rng.integers(8, width // 2)), y0 + int(rng.integers(8, height // 2))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x0, y0, x1, y1], fill=color)
    return img


def write_synthetic_images(directory, n: int, *, seed: int = 0, width: int = 36, height: int = 28):
    """n synthetic PNGs directory/img00.png ... of varied sizes (width + 5 * (i % 9), height +
    3 * (i % 3)), seeds seed, seed + 1, ...: the inputs of the Ray tests and benchmark.
    Returns their paths in order."""
    from pathlib import Path

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = directory / f"img{i:02d}.png"
        synthetic_image(width + 5 * (i % 9), height + 3 * (i % 3), seed=seed + i).save(path)
        paths.append(path)
    return paths


def small_config(latent: int = 8):
    """FASegConfig on a latent x latent grid (image 8 * latent): every stage of the method, far
    cheaper than 64 x 64 on a CPU; what tests and benchmarks run the tiny model at."""
    from faseg_rt.config import FASegConfig

    rs = (latent // 8, latent // 4, latent // 2, latent)
    return FASegConfig(image_size=8 * latent, latent_size=latent,
                       cross_weights=dict(zip(rs, (0.15, 0.70, 0.15, 0.0))),
                       self_weights=dict(zip(rs, (0.1, 0.1, 0.5, 0.3))))


def write_small_config(path, latent: int = 8) -> Path:
    """small_config(latent) as the JSON file the commands' --config takes; returns path."""
    path = Path(path)
    path.write_text(json.dumps(small_config(latent).to_dict()), encoding="utf-8")
    return path
