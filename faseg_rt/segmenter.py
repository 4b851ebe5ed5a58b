"""Segmenter: the public entry point. Loads a model with a backend and runs the whole method.

    seg = Segmenter.from_pretrained("XCLIU/2_rectified_flow_from_sd_1_5")
    res = seg("street.jpg", classes=["car", "person"], caption="a busy street")

Stages (spec steps 1-8): prompts -> encode -> invert -> reconstruct -> hard -> ttf -> labels.
The backend runs the four networks; everything else is device-side torch code here, with one
transfer to the host at the end.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from faseg_rt.backends import Backend, load_backend
from faseg_rt.config import FASegConfig
from faseg_rt.errors import InvalidInputError
from faseg_rt.images import load_image, pair_pixels, preprocess
from faseg_rt.method.hard import class_maps, cross_fusion, hard
from faseg_rt.method.inversion import fixed_noise, invert, sample_latents
from faseg_rt.method.prompts import DualPrompts, build_dual_prompts
from faseg_rt.method.ttf import labels_from_scores, resize_labels, ttf
from faseg_rt.profiling import stage
from faseg_rt.results import SegmentationResult


@dataclass(frozen=True)
class TextEmbeddings:
    """Encoded dual prompts of one (caption, classes): full (77, D) and chunks (J, 77, D)."""

    prompts: DualPrompts
    full: torch.Tensor
    chunks: torch.Tensor


def check_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)):
        raise InvalidInputError(f"threshold must be a number in [0, 1], got {threshold!r}")
    threshold = float(threshold)
    if not (0.0 <= threshold <= 1.0):  # also rejects NaN
        raise InvalidInputError(f"threshold must lie in [0, 1], got {threshold}")
    return threshold


def default_device_dtype(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """CUDA + fp16 when available, else CPU + fp32 (each overridable)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidInputError(f"unknown device {device!r}; use e.g. 'cpu', 'cuda' or 'cuda:1'") from None
    if isinstance(dtype, str):
        names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
                 "fp16": torch.float16, "half": torch.float16, "float": torch.float32,
                 "float64": torch.float64, "fp64": torch.float64, "double": torch.float64}
        if dtype.removeprefix("torch.") not in names:
            raise InvalidInputError(f"unknown dtype {dtype!r}; use float32 or float16")
        dtype = names[dtype.removeprefix("torch.")]
    if dtype is not None and dtype not in (torch.float32, torch.float16, torch.float64):
        raise InvalidInputError(f"dtype must be torch.float32 or torch.float16 (float64 for checks), "
                                f"got {dtype!r}")
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    if device.type == "cpu" and dtype == torch.float16:
        raise InvalidInputError("float16 on the CPU is not supported; use dtype=torch.float32")
    return device, dtype


class Segmenter:
    """FA-Seg on one loaded model.  Thread-safe: calls share no mutable state but a text cache."""

    def __init__(self, backend: Backend, tokenizer, config: FASegConfig | None = None,
                 text_cache_size: int = 64):
        self.backend = backend
        self.tokenizer = tokenizer
        self.config = config or FASegConfig()
        if tokenizer.model_max_length != backend.dims.text_len:
            raise InvalidInputError(
                f"tokenizer length {tokenizer.model_max_length} != text encoder length {backend.dims.text_len}")
        self._noise = fixed_noise(self.config, backend.dims.latent_channels)
        self._timestep = torch.tensor([self.config.timestep], dtype=torch.int64, device=backend.device)
        self._text_cache: OrderedDict = OrderedDict()
        self._text_cache_size = text_cache_size
        self._lock = threading.Lock()
        self._hard, self._ttf = hard, ttf  # torch.compile-d by from_pretrained(compile=...)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, model, *, backend: str = "torch", device=None, dtype=None,
                        engines=None, config: FASegConfig | None = None, compile=None,
                        cuda_graphs: bool = False) -> "Segmenter":
        """Load a diffusers SD 1.x directory or hub id with a backend ("torch", "onnxruntime",
        "tensorrt"; the latter two run graphs exported to `engines` by export/build_engines.py).

        compile (True / a torch.compile backend name) and cuda_graphs: the torch fast path
        (faseg_rt/backends/fast.py); compile also compiles HARD and TTF.  Both off by default."""
        from faseg_rt.backends.fast import compile_backend, compiled
        from faseg_rt.model import load_tokenizer

        device, dtype = default_device_dtype(device, dtype)
        tokenizer = load_tokenizer(model)
        be = load_backend(backend, model, device=device, dtype=dtype, engines=engines, config=config,
                          compile=compile, cuda_graphs=cuda_graphs)
        seg = cls(be, tokenizer, config)
        method_backend = compile_backend(compile)
        seg._hard, seg._ttf = compiled(hard, method_backend), compiled(ttf, method_backend)
        return seg

    def to(self, device, dtype: torch.dtype | None = None) -> "Segmenter":
        """Move to another device / dtype (torch backend); returns self, like nn.Module.to."""
        device, dtype = default_device_dtype(device, dtype or (
            self.dtype if torch.device(device).type == self.device.type else None))
        self.backend = self.backend.to(device, dtype)
        self._timestep = self._timestep.to(self.backend.device)
        with self._lock:
            self._text_cache.clear()
        return self

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backend.dtype

    # ------------------------------------------------------------------ prompts
    def encode_text(self, classes: Sequence[str], caption: str | None = None) -> TextEmbeddings:
        """Dual prompts and their embeddings, cached per (caption, classes)."""
        prompts = build_dual_prompts(self.tokenizer, classes, caption)
        key = (prompts.caption, prompts.classes)
        with self._lock:
            hit = self._text_cache.get(key)
            if hit is not None:
                self._text_cache.move_to_end(key)
                return hit
        ids = torch.tensor([prompts.full_ids] + [c.input_ids for c in prompts.chunks],
                           dtype=torch.int64, device=self.device)
        with stage("text_encoder", self.device):
            emb = self.backend.text_encoder(input_ids=ids)["last_hidden_state"]
        text = TextEmbeddings(prompts, emb[0], emb[1:])
        with self._lock:
            self._text_cache[key] = text
            while len(self._text_cache) > self._text_cache_size:
                self._text_cache.popitem(last=False)
        return text

    # ------------------------------------------------------------------ tensor-level stages
    def attention_summaries(self, batch: torch.Tensor, texts: Sequence[TextEmbeddings]) -> dict[str, torch.Tensor]:
        """Encode, invert and reconstruct (spec steps 2-4) for B images.

        batch: (B, 3, 512, 512) uint8 resized images; texts: one TextEmbeddings per image.
        Returns the unet_attn summaries for the 2B latents [image 0, mirror 0, image 1, ...].
        """
        be, cfg = self.backend, self.config
        with stage("vae_encoder", be.device):
            pixels = pair_pixels(batch.to(be.device), be.dtype)                   # (2B, 3, s, s)
            moments = be.vae_encoder(pixels=pixels)["moments"]
            z0 = sample_latents(moments.float(), self._noise, be.dims.scaling_factor)  # (2B, 4, 64, 64)
        full = torch.stack([t.full for t in texts]).repeat_interleave(2, dim=0)   # (2B, 77, D)
        with stage("unet_inversion", be.device):
            eps = be.unet(latents=z0.to(be.dtype), timestep=self._timestep,
                          encoder_hidden_states=full)["eps"]
            z1 = invert(z0, eps.float(), cfg)
        n_chunks = max(t.chunks.shape[0] for t in texts)
        chunks = torch.stack([_pad_chunks(t.chunks, n_chunks) for t in texts])
        chunks = chunks.repeat_interleave(2, dim=0)                                # (2B, J, 77, D)
        with stage("unet_reconstruction", be.device):
            return be.unet_attn(latents=z1.to(be.dtype), timestep=self._timestep,
                                encoder_hidden_states=full, class_hidden_states=chunks)

    def refine(self, summaries: dict[str, torch.Tensor], prompts: DualPrompts,
               rows: slice | None = None) -> torch.Tensor:
        """Cross fusion, HARD and TTF (spec steps 5-7) for images sharing one class list.

        rows selects the latents (2 per image) of those images.  Returns (b, K, 512, 512) float32.
        """
        cfg = self.config
        rows = rows or slice(None)
        s = cfg.latent_size
        with stage("hard", self.device):
            cross = {r: summaries[f"cross_{r}"][rows].float() for r in cfg.resolutions}
            c = cross_fusion(cross, cfg.cross_weights, s)                         # (n, J*T, s*s)
            tm = prompts.token_matrix(self.backend.dims.text_len)
            tm = torch.nn.functional.pad(tm, (0, 0, 0, c.shape[1] - tm.shape[0]))  # padded chunks: 0
            maps = class_maps(c, tm.to(c.device)).reshape(c.shape[0], -1, s, s)   # (n, K, s, s)
            self_attn = {r: summaries[f"self_{r}"][rows] for r in cfg.resolutions if r != s}
            m = self._hard(maps, self_attn, summaries[f"q_{s}"][rows], summaries[f"k_{s}"][rows],
                     cfg.self_weights, cfg.tau)
        with stage("ttf", self.device):
            return self._ttf(m, cfg.image_size)                                          # (b, K, 512, 512)

    # ------------------------------------------------------------------ user API
    def __call__(self, image, classes: Sequence[str], caption: str | None = None,
                 threshold: float | None = None) -> SegmentationResult:
        """Segment one image (path, PIL image or uint8 array) into `classes` (+ background)."""
        return self.segment_batch([image], classes, captions=[caption], batch_size=1,
                                  threshold=threshold)[0]

    segment = __call__

    def segment_batch(self, images: Sequence, classes, captions: Sequence[str | None] | None = None,
                      batch_size: int = 8, threshold: float | None = None,
                      progress: bool = False) -> list[SegmentationResult]:
        """Segment many images, `batch_size` per network call; same results as one at a time.

        classes: one class list for all images, or one list per image.
        captions: None, or one caption (or None) per image.
        """
        images = list(images)
        threshold = check_threshold(self.config.threshold if threshold is None else threshold)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive integer, got {batch_size!r}")
        per_image = _per_image_classes(classes, len(images))
        if captions is None:
            captions = [None] * len(images)
        captions = list(captions)
        if len(captions) != len(images):
            raise InvalidInputError(f"got {len(captions)} captions for {len(images)} images")
        texts = [self.encode_text(c, cap) for c, cap in zip(per_image, captions)]

        results: list[SegmentationResult] = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(images), unit="img", desc="faseg")
        for start in range(0, len(images), batch_size):
            chunk = slice(start, start + batch_size)
            with stage("load_image"):
                pil = [load_image(x) for x in images[chunk]]
            results += self._segment_loaded(pil, texts[chunk], threshold)
            if bar is not None:
                bar.update(len(pil))
        if bar is not None:
            bar.close()
        return results

    def _segment_loaded(self, pil, texts, threshold) -> list[SegmentationResult]:
        with stage("resize"):
            batch = preprocess(pil, self.config.image_size)
        summaries = self.attention_summaries(batch, texts)
        out: list[SegmentationResult | None] = [None] * len(pil)
        for group in _groups(texts):
            rows = slice(2 * group[0], 2 * group[-1] + 2) if _contiguous(group) else \
                torch.tensor([2 * i + h for i in group for h in (0, 1)], device=self.device)
            scores = self.refine(summaries, texts[group[0]].prompts, rows)         # (b, K, 512, 512)
            with stage("labels", self.device):
                labels = labels_from_scores(scores, threshold)                      # (b, 512, 512)
                labels = [resize_labels(labels[b], pil[i].size[1], pil[i].size[0]).to(torch.int32)
                          for b, i in enumerate(group)]
                scores_host = scores.cpu().numpy()                                  # one transfer
                labels = [lab.cpu().numpy() for lab in labels]
            for b, i in enumerate(group):
                out[i] = SegmentationResult(
                    labels=labels[b], scores=scores_host[b], classes=texts[i].prompts.classes,
                    threshold=threshold, caption=texts[i].prompts.caption, image=pil[i])
        return out


def _pad_chunks(chunks: torch.Tensor, n: int) -> torch.Tensor:
    """Pad (J, 77, D) to (n, 77, D) by repeating the last chunk (its maps get zero weight)."""
    if chunks.shape[0] == n:
        return chunks
    return torch.cat([chunks, chunks[-1:].expand(n - chunks.shape[0], -1, -1)])


def _per_image_classes(classes, n: int) -> list:
    if isinstance(classes, (list, tuple)) and classes and all(isinstance(c, (list, tuple)) for c in classes):
        if len(classes) != n:
            raise InvalidInputError(f"got {len(classes)} per-image class lists for {n} images")
        return list(classes)
    return [classes] * n


def _groups(texts: Sequence[TextEmbeddings]) -> list[list[int]]:
    """Indices of images grouped by identical class list (HARD batches over a shared K)."""
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(texts):
        groups.setdefault(t.prompts.classes, []).append(i)
    return list(groups.values())


def _contiguous(idx: list[int]) -> bool:
    return idx == list(range(idx[0], idx[-1] + 1))
