"""Cross fusion (spec step 5) and HARD, hierarchical attention refinement (spec step 6).

Factorised form, exact by linearity, with no (64*64) x (64*64) matrix (small vocabularies):
- r < 64: A_r @ x = bicubic_up_to_64(S_r @ blocksum_r(x)); everything stays r*r-sized.
- r = 64: S_64 @ x = mean over layers and heads of softmax(q k^T) @ x: scaled-dot-product
  attention with the class maps as values, all K classes at once, O(N K) memory.

For vocabularies wider than the head width + 32 classes, S_64 is instead built once per latent as
the dense head-averaged 4096 x 4096 matrix (64 MiB, in row blocks): the fused form would
recompute every head's softmax for each block of classes (see apply_affinity_full_power).

Shapes: N latents (image and mirror of each image), K classes, s = 64 the latent side,
J class-prompt chunks, T = 77 tokens.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F


def _fuse(parts, size: int) -> torch.Tensor:
    """sum of w * nearest_up_to_size(x) over the (w, x (N, C, r, r)) pairs of `parts`."""
    out = None
    for w, x in parts:
        x = F.interpolate(x, size=(size, size), mode="nearest") * w
        out = x if out is None else out + x
    return out


def cross_fusion(cross: Mapping[int, torch.Tensor], weights: Mapping[int, float], size: int) -> torch.Tensor:
    """c = sum_r w_r * nearest_up_to_size(C_r).

    cross[r]: (N, J, r*r, T) class-aware maps.  Returns (N, J*T, size*size).
    """
    out = _fuse(((w, cross[r].transpose(2, 3).reshape(cross[r].shape[0], -1, r, r))
                 for r, w in weights.items() if w != 0), size)
    return out.reshape(out.shape[0], out.shape[1], size * size)


def class_maps(c: torch.Tensor, token_matrix: torch.Tensor) -> torch.Tensor:
    """Each class's map = mean of c over its tokens: (N, J*T, P) x (J*T, K) -> (N, K, P)."""
    return torch.einsum("ntp,tk->nkp", c, token_matrix.to(c))


#: HARD applies S_64 by fused attention while K <= head width + DENSE_AFTER_EXTRA_CLASSES, and
#: through the dense head-averaged S_64 above (see apply_affinity_full_power).
DENSE_AFTER_EXTRA_CLASSES = 32
#: Query rows of S_64 built at once in the dense path: a (rows x 4096) block per head.
DENSE_ROWS = 512


def class_maps_fused(cross: Mapping[int, torch.Tensor], weights: Mapping[int, float],
                     token_matrix: torch.Tensor, size: int) -> torch.Tensor:
    """Cross fusion and class maps in one step: c_k = sum_r w_r * nearest_up(C_r @ t_k).

    cross[r]: (N, J, r*r, T); token_matrix: (J*T, K) (`DualPrompts.token_matrix`, padded chunks
    zero).  Equal by linearity to class_maps(cross_fusion(...)) but the token average runs at
    each resolution first, so nothing of size J*T x size^2 is built: memory O(N K size^2)
    whatever the number of chunks.  Returns (N, K, size, size).
    """
    def part(r: int) -> torch.Tensor:
        n, j, _, t = cross[r].shape
        tm = token_matrix.to(cross[r])[: j * t].reshape(j, t, -1)              # (J, T, K)
        return torch.einsum("njpt,jtk->nkp", cross[r], tm).reshape(n, -1, r, r)  # (N, K, r, r)

    return _fuse(((w, part(r)) for r, w in weights.items() if w != 0), size)


def blocksum(x: torch.Tensor, r: int) -> torch.Tensor:
    """Sum (N, K, s, s) over (s/r) x (s/r) blocks -> (N, K, r*r): A_r's nearest-duplicated keys."""
    n, k, s, _ = x.shape
    f = s // r
    return x.reshape(n, k, r, f, r, f).sum(dim=(3, 5)).reshape(n, k, r * r)


def apply_affinity_coarse(self_r: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A_r @ x for r < s.  self_r: (N, r*r, r*r) mean self-attention; x: (N, K, s, s)."""
    n, k, s, _ = x.shape
    rr = self_r.shape[-1]
    r = int(round(rr ** 0.5))
    y = blocksum(x, r) @ self_r.transpose(1, 2)                      # (N, K, r*r): S_r @ xs
    return F.interpolate(y.reshape(n, k, r, r), size=(s, s), mode="bicubic", align_corners=False)


def apply_affinity_full(q: torch.Tensor, k: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """S_s @ x at the full latent resolution via fused attention.

    q, k: (N, H, P, d) with H = layers x heads and q pre-scaled; x: (N, K, s, s).
    Fused (flash) kernels want one head width for q, k and v, so q, k and the values are
    zero-padded to max(d, K): zeros add nothing to q.k, and padded value columns are dropped.
    """
    n, kk, s, _ = x.shape
    heads, d = q.shape[1], q.shape[-1]
    width = max(d, kk)
    if width > d:
        q = F.pad(q, (0, width - d))
        k = F.pad(k, (0, width - d))
    v = x.reshape(n, 1, kk, s * s).transpose(2, 3).to(q.dtype)                 # (N, 1, P, K)
    v = F.pad(v, (0, width - kk)).expand(n, heads, s * s, width).contiguous()  # (N, H, P, width)
    out = F.scaled_dot_product_attention(q, k, v, scale=1.0)[..., :kk]         # (N, H, P, K)
    return out.to(x.dtype).mean(dim=1).transpose(1, 2).reshape(n, kk, s, s)


def full_affinity(q: torch.Tensor, k: torch.Tensor, rows: int = DENSE_ROWS) -> torch.Tensor:
    """S = mean over heads of softmax(q k^T) for ONE latent: q, k (H, P, d) -> (P, P).

    Built `rows` query rows and one head at a time (transient rows x P), so the peak is the
    P x P result (64 MiB in float32 at P = 4096) plus one block.
    """
    heads, p, _ = q.shape
    s = torch.empty(p, p, dtype=q.dtype, device=q.device)
    for r0 in range(0, p, rows):
        blk = torch.zeros(min(rows, p - r0), p, dtype=q.dtype, device=q.device)
        for h in range(heads):
            blk += torch.softmax(q[h, r0:r0 + rows] @ k[h].transpose(0, 1), dim=-1)
        s[r0:r0 + rows] = blk / heads
    return s


def apply_affinity_full_power(q: torch.Tensor, k: torch.Tensor, x: torch.Tensor, tau: int) -> torch.Tensor:
    """S_s^tau @ x for (N, K, s, s) maps.

    Fused attention costs ~2 H P^2 max(K, d) per application and pads q and k to width K
    above the head width d (memory O(N H P K)); the dense head-averaged S costs H P^2 (d + a
    softmax) once per latent and then P^2 K per application, with O(P^2) memory.  So up to
    d + DENSE_AFTER_EXTRA_CLASSES classes the fused path runs (unchanged from the first
    release); above, S is built densely for one latent at a time.
    """
    n, kk, s, _ = x.shape
    if kk <= q.shape[-1] + DENSE_AFTER_EXTRA_CLASSES:
        for _ in range(tau):
            x = apply_affinity_full(q, k, x)
        return x
    out = torch.empty_like(x)
    for i in range(n):
        a = full_affinity(q[i], k[i]).to(x.dtype)                              # (P, P)
        o = x[i].reshape(kk, s * s).transpose(0, 1)                            # (P, K)
        for _ in range(tau):
            o = a @ o
        out[i] = o.transpose(0, 1).reshape(kk, s, s)
        del a
    return out


def minmax_normalize(o: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each (s, s) map of (N, K, s, s) to [0, 1]; a constant map becomes 0."""
    flat = o.flatten(2)
    lo = flat.amin(dim=2, keepdim=True)
    rng = flat.amax(dim=2, keepdim=True) - lo
    safe = torch.where(rng > 0, rng, torch.ones_like(rng))
    out = torch.where(rng > 0, (flat - lo) / safe, torch.zeros_like(flat))
    return out.reshape(o.shape)


def hard(maps: torch.Tensor, self_attn: Mapping[int, torch.Tensor], q_full: torch.Tensor,
         k_full: torch.Tensor, weights: Mapping[int, float], tau: int) -> torch.Tensor:
    """m_k = sum_r w_r * minmax(A_r^tau @ c_k) for all classes at once.

    maps: (N, K, s, s) class maps c_k; self_attn[r]: (N, r*r, r*r) for r < s;
    q_full, k_full: (N, H, s*s, d).  Computes in the maps' dtype (the caller's precision policy
    decides it: the Segmenter's hard row); the affinities are cast to it.
    Returns (N, K, s, s).
    """
    s = maps.shape[-1]
    dt = maps.dtype
    q_full, k_full = q_full.to(dt), k_full.to(dt)
    out = torch.zeros_like(maps)
    for r, w in weights.items():
        if not w:
            continue
        o = maps
        if r == s:
            o = apply_affinity_full_power(q_full, k_full, o, tau)
        else:
            for _ in range(tau):
                o = apply_affinity_coarse(self_attn[r].to(dt), o)
        out = out + w * minmax_normalize(o)
    return out
