"""The slow, literal FA-Seg oracle: dense matrices, matrix powers, per-class loops.

Written from the spec (docs/algorithm.md) independently of the fast path, and
used only by tests and benchmarks.  Where the fast path factorises, this builds the published
method's objects as they are: each 4096 x 4096 affinity A_r, A_r^tau by matrix power, one class
at a time.  Token positions come from tokenizing prefixes of the class prompt (not from per-class
concatenation), the inversion constants from diffusers' DDIMScheduler, the noise from the VAE
distribution's mean and std, and resizing from PIL.

Use `ReferenceFASeg(vae, text_encoder, unet, tokenizer)`; pass modules in float64 (`.double()`)
to get a float64 reference.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

CROSS_WEIGHTS = {8: 0.15, 16: 0.70, 32: 0.15, 64: 0.0}
SELF_WEIGHTS = {8: 0.1, 16: 0.1, 32: 0.5, 64: 0.3}
TAU = 2
SIDE = 64


class _DenseStore:
    """Sums of attention probabilities per resolution, dense (including 4096 x 4096 at 64)."""

    def __init__(self, class_embeddings: list[torch.Tensor]):
        self.class_embeddings = class_embeddings   # J tensors (1, 77, D)
        self.cross_sum, self.cross_n = {}, {}
        self.self_sum, self.self_n = {}, {}


class _LiteralProcessor:
    """Attention with explicit softmax, one head at a time; records into a _DenseStore."""

    def __init__(self):
        self.store: _DenseStore | None = None

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        cross = encoder_hidden_states is not None
        ctx = encoder_hidden_states if cross else hidden_states
        b, n, _ = hidden_states.shape
        r = int(round(math.sqrt(n)))
        h = attn.heads
        q_all, k_all, v_all = attn.to_q(hidden_states), attn.to_k(ctx), attn.to_v(ctx)
        d = q_all.shape[-1] // h
        outs = []
        for head in range(h):
            sl = slice(head * d, (head + 1) * d)
            q, k, v = q_all[..., sl], k_all[..., sl], v_all[..., sl]
            probs = torch.softmax(torch.bmm(q, k.transpose(1, 2)) * attn.scale, dim=-1)
            outs.append(torch.bmm(probs, v))
            if self.store is None:
                continue
            if cross:
                maps = []
                for e in self.store.class_embeddings:
                    kc = attn.to_k(e.to(q.dtype))[..., sl].expand(b, -1, -1)
                    maps.append(torch.softmax(torch.bmm(q, kc.transpose(1, 2)) * attn.scale, dim=-1))
                m = torch.stack(maps, 1)  # (b, J, n, 77)
                self.store.cross_sum[r] = self.store.cross_sum.get(r, 0) + m
                self.store.cross_n[r] = self.store.cross_n.get(r, 0) + 1
            else:
                self.store.self_sum[r] = self.store.self_sum.get(r, 0) + probs
                self.store.self_n[r] = self.store.self_n.get(r, 0) + 1
        out = torch.cat(outs, dim=-1)
        return attn.to_out[1](attn.to_out[0](out))


def reference_spans(tokenizer, classes: list[str]) -> tuple[list[list[str]], list[list[tuple[int, int]]]]:
    """Split classes into class prompts of <= 75 tokens and find each class's token positions
    by tokenizing prefixes of its class prompt."""
    cap = tokenizer.model_max_length - 2
    n_tok = lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    chunks: list[list[str]] = [[]]
    for c in classes:
        trial = ", ".join(chunks[-1] + [c])
        if chunks[-1] and n_tok(trial) > cap:
            chunks.append([])
        chunks[-1].append(c)
    spans = []
    for chunk in chunks:
        sp = []
        for i, c in enumerate(chunk):
            prefix = ", ".join(chunk[:i]) + (", " if i else "")
            sp.append((1 + n_tok(prefix), 1 + n_tok(prefix + c)))
        spans.append(sp)
    return chunks, spans


def dense_affinity(S_r: torch.Tensor, side: int = SIDE) -> torch.Tensor:
    """A_r (4096 x 4096) from S_r ((r*r) x (r*r)): query axis bicubic-upsampled to 64 x 64,
    key axis nearest-duplicated (rows not renormalised); A_64 = S_64."""
    rr = S_r.shape[0]
    r = int(round(math.sqrt(rr)))
    if r == side:
        return S_r
    # query axis: treat each key column as an r x r image over the query grid
    cols = S_r.t().reshape(1, rr, r, r)
    up = F.interpolate(cols, size=(side, side), mode="bicubic", align_corners=False)
    A = up.reshape(rr, side * side).t()                       # (4096 queries, r*r keys)
    f = side // r
    key_of = [(i // f) * r + (j // f) for i in range(side) for j in range(side)]
    return A[:, key_of]                                        # (4096, 4096)


def reference_hard_ttf(cross: dict[int, torch.Tensor], selfs: dict[int, torch.Tensor],
                       spans: list[list[tuple[int, int]]], threshold: float,
                       out_size: tuple[int, int] | None = None, side: int = SIDE):
    """Steps 5-8 for one image, literally.

    cross[r]: (2, J, r*r, 77) layer/head means; selfs[r]: (2, r*r, r*r) (dense, r = side
    included).  side: the latent grid (64 for SD 1.5 at 512 px; the spec's weights move with it,
    coarsest to finest, as the small configs of the tests do).
    Returns (scores (K, 8 side, 8 side) float numpy, labels (H, W) int numpy).
    """
    cross_weights, self_weights = _at_side(CROSS_WEIGHTS, side), _at_side(SELF_WEIGHTS, side)
    image = 8 * side
    halves = []
    for half in range(2):
        # step 5: cross fusion, nearest upsampling by repeating rows and columns
        c = 0
        for r, w in cross_weights.items():
            C = cross[r][half]                                   # (J, r*r, 77)
            J = C.shape[0]
            grid = C.permute(0, 2, 1).reshape(J, 77, r, r)
            f = side // r
            up = grid.repeat_interleave(f, dim=2).repeat_interleave(f, dim=3)
            c = c + w * up.reshape(J, 77, side * side)
        class_maps = []
        for j, chunk_spans in enumerate(spans):
            for start, end in chunk_spans:
                class_maps.append(c[j, start:end].mean(0))     # (4096,)
        # step 6: HARD with dense matrix powers, one class at a time
        m = [0.0] * len(class_maps)
        for r, w in self_weights.items():
            A_tau = torch.linalg.matrix_power(dense_affinity(selfs[r][half], side), TAU)
            for kk, ck in enumerate(class_maps):
                o = A_tau @ ck
                lo, hi = o.min(), o.max()
                o = (o - lo) / (hi - lo) if hi > lo else torch.zeros_like(o)
                m[kk] = m[kk] + w * o
        halves.append(m)
    # step 7: TTF, one class at a time
    scores = []
    for kk in range(len(halves[0])):
        ups = [F.interpolate(h[kk].reshape(1, 1, side, side), size=(image, image), mode="bicubic",
                             align_corners=False)[0, 0] for h in halves]
        scores.append(((ups[0] + torch.flip(ups[1], dims=[1])) / 2).double().numpy())
    scores = np.stack(scores)
    # step 8: labels, PIL nearest resize to the original size
    labels = np.where(scores.max(0) < threshold, 0, scores.argmax(0) + 1).astype(np.int32)
    if out_size is not None and out_size != (image, image):
        labels = np.asarray(Image.fromarray(labels, mode="I").resize(out_size, Image.NEAREST)).astype(np.int32)
    return scores, labels


def _at_side(weights: dict, side: int) -> dict:
    """The spec's per-resolution weights (keyed 8..64) moved to a latent grid `side`."""
    return {r * side // SIDE: w for r, w in weights.items()}


class ReferenceFASeg:
    """The whole method, literally, on diffusers modules (loaded by the caller)."""

    def __init__(self, vae, text_encoder, unet, tokenizer, side: int = SIDE):
        """side: the latent grid to run at (64: SD 1.5's 512 px; a toy model's 16: 128 px)."""
        from diffusers import DDIMScheduler

        self.side = side
        self.vae, self.text_encoder, self.unet, self.tokenizer = vae, text_encoder, unet, tokenizer
        self.dtype = next(unet.parameters()).dtype
        self.proc = _LiteralProcessor()
        unet.set_attn_processor(self.proc)
        sched = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
        sched.set_timesteps(1)
        self.t = int(sched.timesteps[0])
        self.a_prev = float(sched.final_alpha_cumprod)
        self.a = float(sched.alphas_cumprod[self.t])

    def _ids(self, text: str) -> torch.Tensor:
        return self.tokenizer(text, padding="max_length", max_length=self.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids

    def _encode(self, text: str) -> torch.Tensor:
        return self.text_encoder(self._ids(text))[0]

    @torch.no_grad()
    def attention(self, image: Image.Image, classes: list[str], caption: str | None = None,
                  trace: dict | None = None):
        """Steps 1-4: returns (cross, selfs, spans) with dense layer/head means.

        trace: a dict that receives every intermediate (E_ids, E, E_cls, pixels, moments, z0, eps, z1),
        so a stage of another implementation can be run on this one's input and compared."""
        chunks, spans = reference_spans(self.tokenizer, classes)
        full = ", ".join(classes)
        if caption:
            full = f"{caption} ; {full}"
        E = self._encode(full)
        E_cls = [self._encode(", ".join(ch)) for ch in chunks]
        img = image.convert("RGB").resize((8 * self.side,) * 2, Image.BICUBIC)
        pair = np.stack([np.asarray(img), np.asarray(img.transpose(Image.FLIP_LEFT_RIGHT))])
        x = torch.from_numpy(pair.astype(np.float64)).permute(0, 3, 1, 2) / 127.5 - 1.0
        # contiguous NCHW: a channels-last input takes other CPU kernels (GroupNorm's one-pass
        # variance) that differ by ~1e-3 on a random VAE
        x = x.to(self.dtype).contiguous()
        dist = self.vae.encode(x).latent_dist
        # the spec's noise: float32 randn from a CPU generator seeded 0 (drawing in float64
        # would give other numbers), cast to the model's dtype
        noise = torch.randn(dist.mean.shape, generator=torch.Generator("cpu").manual_seed(0))
        z0 = (dist.mean + dist.std * noise.to(self.dtype)) * self.vae.config.scaling_factor
        cond = E.expand(2, -1, -1)
        self.proc.store = None
        eps = self.unet(z0, self.t, encoder_hidden_states=cond).sample
        x0 = (z0 - math.sqrt(1 - self.a_prev) * eps) / math.sqrt(self.a_prev)
        z1 = math.sqrt(self.a) * x0 + math.sqrt(1 - self.a) * eps
        if trace is not None:
            trace.update(E_ids=self._ids(full), E=E, E_cls=E_cls, pixels=x, moments=dist.parameters,
                         z0=z0, eps=eps, z1=z1)
        cross, selfs = self.reconstruct(z1, E, E_cls)
        return cross, selfs, spans

    @torch.no_grad()
    def reconstruct(self, z1: torch.Tensor, E: torch.Tensor, E_cls: list[torch.Tensor]):
        """Step 4 from given latents z1 (2, 4, 64, 64), full-prompt E (1, 77, D) and class-prompt
        embeddings E_cls (J x (1, 77, D)): (cross, selfs) dense layer/head means."""
        cond = E.expand(z1.shape[0], -1, -1)
        store = _DenseStore(E_cls)
        self.proc.store = store
        try:
            self.unet(z1, self.t, encoder_hidden_states=cond)
        finally:
            self.proc.store = None
        cross = {r: store.cross_sum[r] / store.cross_n[r] for r in store.cross_sum}
        selfs = {r: store.self_sum[r] / store.self_n[r] for r in store.self_sum}
        return cross, selfs

    def __call__(self, image: Image.Image, classes: list[str], caption: str | None = None,
                 threshold: float = 0.55):
        """Returns (scores (K, 8 side, 8 side), labels (H, W)) as numpy arrays."""
        cross, selfs, spans = self.attention(image, classes, caption)
        return reference_hard_ttf(cross, selfs, spans, threshold, out_size=image.size, side=self.side)
