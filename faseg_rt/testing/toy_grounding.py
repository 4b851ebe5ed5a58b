"""Grounding and grouping terms for training the toy model: each class word's cross-attention
on its object, each picture region's self-attention within itself.

The DDPM noise loss alone did not make a tiny model's cross-attention find the named objects
within 20 CPU minutes (docs/eval.md, the localisation study): in the toy world a class's colour and shape
are plain in the noisy picture, so the caption helps the denoiser little and its attention is
shaped slowly.  Training with the noise loss plus a token-level grounding term (as TokenCompose,
Wang et al., CVPR 2024, does to Stable Diffusion with segmentation masks) gives the attention
the layout that web-scale pretraining gives SD, in minutes.  FA-Seg itself never sees the masks:
it reads the trained model's attention like any checkpoint's.

Terms, per attention layer of the UNet (heads averaged):
- grounding (cross-attention), per object named in the text: a = the class token's attention over
  the layer's cells, normalised to sum 1; q = the object's coverage of each cell, normalised the
  same way.  "fill" (the shipped recipe): KL(q || a), the attention spread over the whole object;
  "mass": (1 - sum a * cover)^2, the share on the object, which a single peak inside satisfies
  (FA-Seg's min-max normalisation then keeps only the peak: masks smaller than the objects).
- grouping (self-attention), per query cell: (1 - s)^2 with s the query's attention on cells of
  its own region (the object under the cell's centre, or background); HARD propagates class maps
  along these affinities, as it does along a trained SD's appearance-grouping self-attention.
Each sample is weighted by its signal level sqrt(alpha_bar_t): at high noise there is little
to localise, and FA-Seg reads attention at t = 1.

    store = install(unet)                      # attention layers record their probabilities
    targets = GroundingTargets.build(masks, classes)       # objects on every layer's grid
    tokens = token_positions(ids, classes, class_token_ids)
    cross, grouping = grounding_loss(store, tokens[idx], targets, idx, weight)   # after the forward
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from faseg_rt.eval.datasets.toy_world import NAMES

#: grounding_loss's forms of the cross-attention term (module doc)
FORMS = ("mass", "fill")


class RecordingAttention:
    """The plain attention of diffusers' AttnProcessor for the UNet's transformer layers (no
    group norm, no residual, no spatial norm, rescale 1: asserted on install), keeping each
    call's probabilities ((B * heads, N, 77) for cross, (B * heads, N, N) for self, with grad)
    in `store` as (kind, heads, probs)."""

    def __init__(self, store: list, kind: str):
        self.store, self.kind = store, kind

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(context))
        v = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(q, k, None)
        self.store.append((self.kind, attn.heads, probs))
        out = attn.batch_to_head_dim(torch.bmm(probs, v))
        return attn.to_out[1](attn.to_out[0](out))


def install(unet) -> list:
    """Give every attention layer of `unet` a RecordingAttention sharing one store (attn1:
    "self", attn2: "cross"); returns the store (clear it before each forward)."""
    store: list = []
    procs = {}
    for name in unet.attn_processors:
        layer = unet.get_submodule(name[: -len(".processor")])
        if layer.group_norm is not None or layer.spatial_norm is not None or layer.residual_connection \
                or layer.rescale_output_factor != 1.0 or layer.norm_cross:
            raise ValueError(f"{name}: not a plain attention layer")
        procs[name] = RecordingAttention(store, "cross" if name.endswith("attn2.processor") else "self")
    unet.set_attn_processor(procs)
    return store


def uninstall(unet) -> None:
    """Back to diffusers' default processor (scaled dot-product attention) on every layer."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())


@dataclass
class GroundingTargets:
    """Where each picture's objects are, at every attention resolution r.

    cover[r]: (n, O, r * r) float32 share of each r x r cell object o covers (O: most objects in
    a picture; rows of absent objects are zero); segments[r]: (n, r * r) int64 which region
    (0 background, o + 1 object o) holds the centre of each cell."""

    cover: dict
    segments: dict

    @classmethod
    def build(cls, masks: list[np.ndarray], classes: list[tuple], resolutions=(16, 8, 4, 2)) -> "GroundingTargets":
        """masks: (H, W) uint8 per picture (0 background, k + 1 for NAMES[k]); classes: the
        objects of each picture, in the order token_positions uses."""
        n, most = len(masks), max(len(c) for c in classes)
        cover = {r: torch.zeros(n, most, r * r) for r in resolutions}
        segments = {r: torch.zeros(n, r * r, dtype=torch.long) for r in resolutions}
        for i, (mask, names) in enumerate(zip(masks, classes)):
            for o, name in enumerate(names):
                m = mask == NAMES.index(name) + 1
                for r in resolutions:
                    step = mask.shape[0] // r
                    cover[r][i, o] = torch.from_numpy(coverage(m, r))
                    segments[r][i][torch.from_numpy(m[step // 2::step, step // 2::step].reshape(-1))] = o + 1
        return cls(cover, segments)

    def flipped(self) -> "GroundingTargets":
        """The targets of the mirrored pictures (left-right)."""
        def flip(c, r):
            return c.reshape(*c.shape[:-1], r, r).flip(-1).reshape(c.shape)
        return GroundingTargets({r: flip(c, r) for r, c in self.cover.items()},
                                {r: flip(c, r) for r, c in self.segments.items()})

    def cat(self, other: "GroundingTargets") -> "GroundingTargets":
        return GroundingTargets({r: torch.cat([c, other.cover[r]]) for r, c in self.cover.items()},
                                {r: torch.cat([c, other.segments[r]]) for r, c in self.segments.items()})


def coverage(mask: np.ndarray, r: int) -> np.ndarray:
    """(r * r,) share of each of the r x r cells that `mask` ((H, W) bool, H and W multiples of
    r) covers."""
    h, w = mask.shape
    return mask.reshape(r, h // r, r, w // r).mean(axis=(1, 3)).reshape(-1)


def token_positions(ids: torch.Tensor, classes: list[tuple], class_token_ids: dict) -> torch.Tensor:
    """(n, O) int64: where in each row of ids ((n, 77)) the class word of each object first
    appears (-1: not in the text, e.g. truncated away)."""
    most = max(len(c) for c in classes)
    out = torch.full((len(ids), most), -1, dtype=torch.long)
    for i, names in enumerate(classes):
        for o, name in enumerate(names):
            where = (ids[i] == class_token_ids[name]).nonzero()
            if len(where):
                out[i, o] = int(where[0])
    return out


def grounding_loss(store: list, tokens: torch.Tensor, targets: GroundingTargets, idx: torch.Tensor,
                   weight: torch.Tensor, form: str = "mass"):
    """(cross, self) terms for a batch: tokens (B, O) caption positions of its objects; idx (B,)
    its rows of targets; weight (B,) each sample's weight (its signal level).  cross: mean over
    the cross-attention layers and named objects of (1 - m)^2; self: mean over the
    self-attention layers and query cells of (1 - s)^2 with s the query's attention on cells of
    its own region (module doc)."""
    valid = (tokens >= 0).float() * weight[:, None]                    # (B, O)
    cross, grouping, n_cross, n_self = 0.0, 0.0, 0, 0
    for kind, heads, probs in store:
        b = len(idx)
        p = probs.reshape(b, heads, probs.shape[1], probs.shape[2]).mean(1)      # (B, N, 77 or N)
        r = int(round(p.shape[1] ** 0.5))
        if kind == "self":
            seg = targets.segments[r][idx]                                         # (B, N)
            same = (seg[:, :, None] == seg[:, None, :]).float()                   # (B, N, N)
            grouping = grouping + (((1 - (p * same).sum(2)) ** 2).mean(1) * weight).sum() / weight.sum()
            n_self += 1
            continue
        att = torch.gather(p, 2, tokens.clamp(min=0)[:, None, :].expand(-1, p.shape[1], -1))  # (B, N, O)
        att = att / att.sum(1, keepdim=True).clamp(min=1e-12)
        cover = targets.cover[r][idx].transpose(1, 2)                               # (B, N, O)
        if form == "mass":
            term = (1 - (att * cover).sum(1)) ** 2                                  # (B, O)
        elif form == "fill":   # KL(q || att) with q the object's coverage as a distribution over cells
            q = cover / cover.sum(1, keepdim=True).clamp(min=1e-12)
            term = (q * (torch.log(q.clamp(min=1e-12)) - torch.log(att.clamp(min=1e-12)))).sum(1)
        else:
            raise ValueError(f"form must be one of {FORMS}, not {form!r}")
        cross = cross + (term * valid).sum() / valid.sum().clamp(min=1e-12)
        n_cross += 1
    return cross / max(n_cross, 1), grouping / max(n_self, 1)
