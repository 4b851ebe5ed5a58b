"""Capture of what HARD needs inside the UNet (spec step 4), as a diffusers attention processor.

`FASegAttnProcessor` replaces the processor of every attention layer of the UNet.  Without a
capture object it computes exactly what diffusers' scaled-dot-product processor computes.  With
one (passed per call through `cross_attention_kwargs={"capture": capture}`, so no state is shared
between calls or threads) it also records, per latent resolution r:

- cross layers: class-aware maps softmax(Q K'^T / sqrt(d)) with K' = to_k(class prompt
  embeddings), summed over layers and heads, for every class-prompt chunk;
- self layers, r < 64: the probabilities softmax(Q K^T / sqrt(d)), summed over layers and heads
  ((r*r) x (r*r): small);
- self layers, r = 64: the scaled queries and keys of every layer and head, so HARD can apply
  S_64 with fused attention instead of building a 4096 x 4096 matrix.

The keys/values that flow through the network are always those of the full prompt.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


#: Bytes of the (N, j, h, n, T) logits block record_cross computes at once: chunks are taken
#: in groups that fit, so a 1000-class vocabulary (30 chunks with the CLIP tokenizer) does not
#: build all 30 at once.
CROSS_BLOCK_BYTES = 32 * 2**20


class AttentionCapture:
    """Per-call accumulator of attention summaries.

    class_states: (N, J, 77, D) class-prompt embeddings (J chunks) for the N latents.
    skip_cross: resolutions whose class-aware maps are not needed (cross fusion weight 0): they
    are not computed, and come back as zeros that take no memory (a stride-0 view).
    dtype: what the softmaxes and means run in, from the layers' q / k (the precision policy's
    capture row, faseg_rt.precision).
    After the pass, `summaries()` returns tensors of that dtype:
      cross_{r}: (N, J, r*r, 77) mean over cross layers and heads at r,
      self_{r}:  (N, r*r, r*r)   mean over self layers and heads at r (r < latent_size),
      q_{s}, k_{s}: (N, L*h, s*s, d) with s = latent_size; q already multiplied by the layer's
                    softmax scale, so softmax(q k^T) is the layer's self-attention.
    Layer means are running sums divided by the layer count, so memory does not grow with
    the number of layers.
    """

    def __init__(self, class_states: torch.Tensor, resolutions: tuple[int, ...],
                 skip_cross: tuple[int, ...], dtype: torch.dtype):
        self.class_states = class_states
        self.dtype = dtype
        self.resolutions = tuple(resolutions)
        self.full = max(self.resolutions)
        self.skip_cross = frozenset(skip_cross)
        self._cross: dict[int, list] = {r: [None, 0] for r in self.resolutions}   # [sum, layers]
        self._self: dict[int, list] = {r: [None, 0] for r in self.resolutions if r != self.full}
        self._q, self._k = [], []

    def _resolution(self, tokens: int) -> int:
        r = math.isqrt(tokens)
        if r * r != tokens or r not in self.resolutions:
            raise RuntimeError(f"attention over {tokens} tokens is not one of the latent grids "
                               f"{self.resolutions}: the UNet does not have the SD 1.x layout")
        return r

    @staticmethod
    def _add(acc: list, x: torch.Tensor) -> None:
        acc[0] = x if acc[0] is None else acc[0].add_(x)
        acc[1] += 1

    def record_self(self, q: torch.Tensor, k: torch.Tensor, scale: float) -> None:
        """q, k: (N, h, n, d) of a self-attention layer."""
        r = self._resolution(q.shape[2])
        q = q.to(self.dtype) * scale
        k = k.to(self.dtype)
        if r == self.full:
            self._q.append(q)
            self._k.append(k)
        else:
            probs = torch.softmax(q @ k.transpose(-1, -2), dim=-1)   # (N, h, n, n)
            self._add(self._self[r], probs.mean(1))                   # (N, n, n)

    def record_cross(self, attn, q: torch.Tensor, scale: float) -> None:
        """q: (N, h, n, d) of a cross-attention layer; keys come from the class prompts."""
        r = self._resolution(q.shape[2])
        acc = self._cross[r]
        if r in self.skip_cross:
            acc[1] += 1
            return
        n_lat, heads, n, d = q.shape
        cs = self.class_states.to(dtype=attn.to_k.weight.dtype)
        J, T = cs.shape[1], cs.shape[2]
        qs = (q.to(self.dtype) * scale).unsqueeze(1)                   # (N, 1, h, n, d)
        group = max(1, CROSS_BLOCK_BYTES // (qs.element_size() * n_lat * heads * n * T))
        if group >= J or torch.jit.is_tracing():
            # one block: an exported graph keeps J dynamic (no Python loop over J); its runner
            # calls it with a bounded number of chunks (backends/base.py, ChunkGroups).  Under
            # torch.compile(dynamic=False) J is a constant and the loop below is unrolled.
            self._add(acc, self._class_maps(attn, qs, cs, heads, d))
            return
        if acc[0] is None:
            acc[0] = torch.zeros(n_lat, J, n, T, dtype=self.dtype, device=q.device)
        for j0 in range(0, J, group):                                  # chunk groups, in place
            acc[0][:, j0:j0 + group] += self._class_maps(attn, qs, cs[:, j0:j0 + group], heads, d)
        acc[1] += 1

    @staticmethod
    def _class_maps(attn, qs: torch.Tensor, cs: torch.Tensor, heads: int, d: int) -> torch.Tensor:
        """Head-mean softmax(q K'^T) for the chunks cs (N, j, T, D), in qs' dtype: (N, j, n, T)."""
        n_lat, j, t = cs.shape[:3]
        kc = attn.to_k(cs)                                              # (N, j, T, h*d)
        kc = kc.view(n_lat, j, t, heads, d).permute(0, 1, 3, 4, 2).to(qs.dtype)  # (N, j, h, d, T)
        return torch.softmax(qs @ kc, dim=-1).mean(2)                  # (N, j, n, T)

    def summaries(self) -> dict[str, torch.Tensor]:
        out = {}
        n, J, T = self.class_states.shape[:3]
        for r in self.resolutions:
            total, layers = self._cross[r]
            if not layers:
                raise RuntimeError(f"no cross-attention layer at resolution {r}")
            out[f"cross_{r}"] = (total / layers if total is not None else
                                 torch.zeros((), dtype=self.dtype, device=self.class_states.device)
                                 .expand(n, J, r * r, T))
        for r, (total, layers) in self._self.items():
            if not layers:
                raise RuntimeError(f"no self-attention layer at resolution {r}")
            out[f"self_{r}"] = total / layers
        if not self._q:
            raise RuntimeError(f"no self-attention layer at resolution {self.full}")
        out[f"q_{self.full}"] = torch.cat(self._q, dim=1)
        out[f"k_{self.full}"] = torch.cat(self._k, dim=1)
        return out


class FASegAttnProcessor:
    """Scaled-dot-product attention that can also record what HARD needs (see module doc).

    compute_dtype: the dtype softmax(q k^T) v runs in when it differs from the layer's (float32
    inside a bf16 UNet on CPUs where bf16 attention is no faster, faseg_rt.precision); the output
    goes back to the layer's dtype.
    """

    def __init__(self, compute_dtype: torch.dtype | None = None):
        self.compute_dtype = compute_dtype

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, capture: AttentionCapture | None = None):
        is_cross = encoder_hidden_states is not None
        context = encoder_hidden_states if is_cross else hidden_states
        b, n, _ = hidden_states.shape                                  # (B, n, C)
        heads = attn.heads
        # the prompt embeddings may be float32 in a reduced-precision UNet (faseg_rt.precision)
        context = context.to(attn.to_k.weight.dtype)
        q = attn.to_q(hidden_states)                                   # (B, n, h*d)
        k = attn.to_k(context)                                         # (B, m, h*d)
        v = attn.to_v(context)                                         # (B, m, h*d)
        d = q.shape[-1] // heads
        q = q.view(b, -1, heads, d).transpose(1, 2)                    # (B, h, n, d)
        k = k.view(b, -1, heads, d).transpose(1, 2)                    # (B, h, m, d)
        v = v.view(b, -1, heads, d).transpose(1, 2)                    # (B, h, m, d)
        qc, kc, vc = q, k, v
        if self.compute_dtype is not None and self.compute_dtype != q.dtype:
            qc, kc, vc = q.to(self.compute_dtype), k.to(self.compute_dtype), v.to(self.compute_dtype)
        out = F.scaled_dot_product_attention(qc, kc, vc, attn_mask=attention_mask, scale=attn.scale)
        out = out.transpose(1, 2).reshape(b, -1, heads * d).to(q.dtype)  # (B, n, h*d)
        out = attn.to_out[1](attn.to_out[0](out))                      # linear, dropout
        if capture is not None:
            if is_cross:
                capture.record_cross(attn, q, attn.scale)
            else:
                capture.record_self(q, k, attn.scale)
        return out


def install_processors(unet, compute_dtype: torch.dtype | None = None) -> None:
    """Put FASegAttnProcessor(compute_dtype) on every attention layer, after checking it fits
    their shape.

    Raises ValueError for attention features SD 1.x does not use (and this processor ignores).
    """
    for mod_name, module in unet.named_modules():
        if not hasattr(module, "set_processor") or not hasattr(module, "to_q"):
            continue
        unsupported = [
            flag for flag, present in (
                ("spatial_norm", getattr(module, "spatial_norm", None) is not None),
                ("group_norm", getattr(module, "group_norm", None) is not None),
                ("norm_cross", getattr(module, "norm_cross", None) is not None),
                ("residual_connection", bool(getattr(module, "residual_connection", False))),
                ("rescale_output_factor", getattr(module, "rescale_output_factor", 1.0) != 1.0),
                ("qk norm", getattr(module, "norm_q", None) is not None),
            ) if present]
        if unsupported:
            raise ValueError(f"attention layer {mod_name} uses {', '.join(unsupported)}, which "
                             "SD 1.x UNets do not: this is not an SD 1.x-architecture model")
        module.set_processor(FASegAttnProcessor(compute_dtype))
