"""Train the tiny SD 1.5-shaped model on the toy world (toy_world.py) with the DDPM noise loss.

A `Recipe` names every choice that may decide how soon cross-attention localises the named
objects (steps, learning rate, batch, text encoder frozen or trained, the frozen encoder's token
scale, VAE random or briefly trained, width, picture size, caption form and colours, timestep
sampling).  Two things hold for every recipe, because a random test model breaks FA-Seg without
them (docs/eval.md, "the localisation study"): the VAE's posterior is near-deterministic (FA-Seg
samples mean + std * noise), and the UNet starts from plain init (no sharpening).  `Trainer` holds the modules
and the encoded training set; `Trainer.step()` is one optimiser step, `Trainer.model_dir()`
writes a diffusers model directory that `Segmenter.from_pretrained` loads like any checkpoint.

CPU-sized: the training pictures are VAE-encoded once (both the picture and its mirror), and
with a frozen text encoder each distinct caption is encoded once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from faseg_rt.testing import toy_grounding
from faseg_rt.testing.tiny_sd import TINY, save_model, tiny_modules, write_clip_tokenizer
from faseg_rt.eval.datasets.toy_world import NAMES, ToyWorld

TEXT_MODES = ("frozen", "embeddings", "full")   # what of the text encoder is trained
#: uniform; low: t = 1000 u^2 (the inversion runs at t = 1); mid: logit-normal, t = 1000 sigmoid(n)
#: with n ~ N(0, 1), which weights the mid-noise steps where the caption is most informative
#: (the sampling Stable Diffusion 3 trains with)
TIMESTEPS = ("uniform", "low", "mid")
PROMPT_FORMS = ("caption", "dual")     # Recipe.prompts


@dataclass(frozen=True)
class Recipe:
    """One training configuration (defaults: the first hand-made try of the study)."""

    lr: float = 1e-3
    batch: int = 32
    text: str = "frozen"
    vae_steps: int = 0          # reconstruction-loss steps on the VAE before the UNet trains
    width: float = 1.0          # UNet channel multiplier over the tiny model's (32, 32, 64, 64)
    size: int = 128             # picture side; latent side = size / 8
    caption_form: str = "sentence"
    colours: str = "class"      # toy_world.COLOUR_MODES
    world: str = "objects"      # toy_world.KINDS: the study ran on "objects"
    timesteps: str = "uniform"
    # the text encoder's token embeddings multiplied by this: a random encoder's states are
    # position- and context-dominated, so every class token would get nearly the same key
    token_scale: float = 1.0
    # weight of the grounding term (toy_grounding.py) beside the noise loss; 0: noise loss only
    grounding: float = 0.0
    # weight of the self-attention grouping term (toy_grounding.py); 0: none
    grouping: float = 0.0
    # the grounding term's form (toy_grounding.grounding_loss): "mass" (the share of a class
    # word's attention on its object) or "fill" (its attention spread over the whole object)
    grounding_form: str = "mass"
    # the texts trained on: "caption" (the world's caption), or "dual": each picture's caption,
    # FA-Seg's full prompt "caption ; classes" and its class prompt "classes", one drawn per step
    prompts: str = "caption"
    # 0: constant learning rate; N: cosine decay from lr to lr / 20 over N steps (then lr / 20)
    lr_decay_steps: int = 0
    train_images: int = 2000
    seed: int = 0

    def __post_init__(self):
        if self.text not in TEXT_MODES or self.timesteps not in TIMESTEPS:
            raise ValueError(f"text in {TEXT_MODES}, timesteps in {TIMESTEPS}")
        if self.prompts not in PROMPT_FORMS:
            raise ValueError(f"prompts must be 'caption' or 'dual', not {self.prompts!r}")
        if self.grounding_form not in toy_grounding.FORMS:
            raise ValueError(f"grounding_form must be one of {toy_grounding.FORMS}, not {self.grounding_form!r}")

    def changed(self, **kw) -> "Recipe":
        return replace(self, **kw)

    def to_dict(self) -> dict:
        return asdict(self)


def alphas_cumprod(steps: int = 1000) -> torch.Tensor:
    """The scaled-linear schedule of the spec (beta 0.00085 to 0.012 over 1000 steps)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


class Trainer:
    """The modules of one recipe, its encoded training set and its optimiser."""

    def __init__(self, recipe: Recipe, work_dir: str | Path):
        from transformers import CLIPTokenizer

        self.recipe = r = recipe
        self.work = Path(work_dir)
        widths = dict(TINY, unet_channels=tuple(int(round(c * r.width)) for c in TINY["unet_channels"]))
        self.unet, self.vae, self.text_encoder = tiny_modules(widths, seed=r.seed, sharpen=1.0)
        deterministic_posterior(self.vae)
        with torch.no_grad():
            self.text_encoder.get_input_embeddings().weight.mul_(r.token_scale)
        self.tokenizer = CLIPTokenizer.from_pretrained(str(write_clip_tokenizer(self.work / "tokenizer")))
        self.world = ToyWorld(size=r.size, caption_form=r.caption_form, colours=r.colours, kind=r.world)
        self.gen = torch.Generator().manual_seed(r.seed)
        samples = [self.world.sample(r.seed, i) for i in range(r.train_images)]
        pixels = torch.stack([_pixels(s.image) for s in samples])                # (n, 3, s, s)
        if r.vae_steps:
            self.vae_losses = train_vae(self.vae, pixels, r.vae_steps, self.gen)
            deterministic_posterior(self.vae)
        self.latents = self._encode(torch.cat([pixels, pixels.flip(-1)]))        # (2n, 4, s/8, s/8)
        self.texts = [texts * 2 for texts in _texts(samples, r.prompts)]        # V lists of 2n
        self.ids = self._tokenize([t for texts in self.texts for t in texts])    # (V * 2n, 77)
        self.text_encoder.requires_grad_(False)
        params = list(self.unet.parameters())
        if r.text == "embeddings":
            emb = self.text_encoder.get_input_embeddings().weight
            emb.requires_grad_(True)
            params.append(emb)
        elif r.text == "full":
            self.text_encoder.requires_grad_(True)
            params += list(self.text_encoder.parameters())
        self._frozen_text = self._encode_text_once() if r.text == "frozen" else None
        self._grounding = self._grounding_targets(samples) if r.grounding or r.grouping else None
        self.opt = torch.optim.AdamW(params, lr=r.lr, weight_decay=0.0)
        self.acp = alphas_cumprod()
        self.steps_done = 0

    @torch.no_grad()
    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """VAE means of `pixels`, scaled to unit std; the scaling is stored in the VAE's config
        (what the runtime reads as the scaling factor)."""
        self.vae.eval()
        means = torch.cat([self.vae.encode(pixels[i:i + 64]).latent_dist.mean
                           for i in range(0, len(pixels), 64)])
        scale = float(1.0 / means.std())
        self.vae.register_to_config(scaling_factor=scale)
        return means * scale

    def _grounding_targets(self, samples):
        self._store = toy_grounding.install(self.unet)
        classes = [s.classes for s in samples]
        class_ids = {name: self.tokenizer(name, add_special_tokens=False).input_ids[0] for name in NAMES}
        self._tokens = toy_grounding.token_positions(self.ids, classes * 2 * len(self.texts), class_ids)
        latent = self.recipe.size // 8
        t = toy_grounding.GroundingTargets.build([s.mask for s in samples], classes,
                                                 resolutions=tuple(latent >> i for i in range(4)))
        return t.cat(t.flipped())

    def _tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts, padding="max_length", max_length=77, truncation=True,
                              return_tensors="pt").input_ids

    @torch.no_grad()
    def _encode_text_once(self) -> torch.Tensor:
        uniq, inverse = torch.unique(self.ids, dim=0, return_inverse=True)
        states = self.text_encoder(uniq).last_hidden_state
        return states[inverse]                                                  # (2n, 77, D)

    def step(self) -> float:
        """One optimiser step on a random batch; returns the loss."""
        r = self.recipe
        idx = torch.randint(len(self.latents), (r.batch,), generator=self.gen)
        tid = idx + len(self.latents) * torch.randint(len(self.texts), (r.batch,), generator=self.gen)
        z0 = self.latents[idx]
        t = sample_timesteps(r.timesteps, r.batch, self.gen)
        noise = torch.randn(z0.shape, generator=self.gen)
        a = self.acp[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        if self._frozen_text is not None:
            cond = self._frozen_text[tid]
        else:
            cond = self.text_encoder(self.ids[tid]).last_hidden_state
        self.unet.train()
        if self._grounding is not None:
            self._store.clear()
        pred = self.unet(zt, t, encoder_hidden_states=cond).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        self.last_terms = {"noise": loss.item()}
        if self._grounding is not None:
            g, s = toy_grounding.grounding_loss(self._store, self._tokens[tid], self._grounding, idx, a.sqrt().view(-1),
                                  r.grounding_form)
            self.last_terms.update(grounding=g.item(), grouping=s.item())
            loss = loss + r.grounding * g + r.grouping * s
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if r.lr_decay_steps:
            frac = min(self.steps_done / r.lr_decay_steps, 1.0)
            for group in self.opt.param_groups:
                group["lr"] = r.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        self.opt.step()
        self.steps_done += 1
        return loss.item()

    def model_dir(self, out: str | Path) -> Path:
        """Save the current weights as a diffusers model directory; returns it."""
        self.unet.eval()
        prov = {"toy_world": True, "recipe": self.recipe.to_dict(), "steps": self.steps_done}
        return save_model(Path(out), self.unet, self.vae, self.text_encoder, prov)


def deterministic_posterior(vae, log_std: float = -10.0) -> None:
    """Make the VAE's posterior std exp(log_std) (its log-variance rows of quant_conv output a
    constant), so the latent sample FA-Seg draws (mean + std * fixed noise, spec step 2) is the
    mean the UNet was trained on.  A random VAE's posterior std is ~1 against a mean of std
    ~0.23: its samples are mostly noise, and no attention trained on the means finds anything in
    them.  SD's trained VAE has a small posterior std too."""
    conv = vae.quant_conv
    c = conv.out_channels // 2
    with torch.no_grad():
        conv.weight[c:].zero_()
        conv.bias[c:].fill_(2 * log_std)


def sample_timesteps(kind: str, n: int, gen: torch.Generator) -> torch.Tensor:
    """(n,) int64 training timesteps in [0, 999] drawn as TIMESTEPS[kind] says."""
    if kind == "mid":
        u = torch.sigmoid(torch.randn(n, generator=gen))
    else:
        u = torch.rand(n, generator=gen)
        u = u * u if kind == "low" else u
    return (u * 1000).long().clamp(0, 999)


def train_vae(vae, pixels: torch.Tensor, steps: int, gen: torch.Generator, batch: int = 16,
              lr: float = 1e-3) -> list[float]:
    """Briefly train the VAE as an autoencoder of its posterior means (MSE, a tiny pull of the
    means toward 0), so its latents keep the pictures' layout better than a random encoder's;
    returns the losses."""
    opt = torch.optim.AdamW(vae.parameters(), lr=lr)
    vae.train()
    losses = []
    for _ in range(steps):
        x = pixels[torch.randint(len(pixels), (batch,), generator=gen)]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.mean).sample                       # an autoencoder on the means
        loss = torch.nn.functional.mse_loss(rec, x) + 1e-6 * post.mean.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    vae.eval()
    return losses


def _texts(samples, prompts: str) -> list[list[str]]:
    """The training texts of `samples`: [captions] or, for "dual", [captions, full prompts,
    class prompts] in the spec's dual-prompt form (the class prompt lists the objects in the
    caption's order, as the study's ground-truth candidates do)."""
    captions = [s.caption for s in samples]
    if prompts == "caption":
        return [captions]
    class_prompts = [", ".join(s.classes) for s in samples]
    return [captions, [f"{c} ; {p}" for c, p in zip(captions, class_prompts)], class_prompts]


def _pixels(image) -> torch.Tensor:
    """PIL RGB -> (3, H, W) float32 in [-1, 1]."""
    a = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)
    return a / 127.5 - 1.0
