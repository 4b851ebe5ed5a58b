"""Segmenter: the public entry point. Loads a model with a backend and runs the whole method.

    seg = Segmenter.from_pretrained("XCLIU/2_rectified_flow_from_sd_1_5")
    res = seg("street.jpg", classes=["car", "person"], caption="a busy street")
    res = seg("street.jpg", classes=VOCAB, caption="auto", candidates="auto")   # raw photos

With "auto" the front end (faseg_rt.frontend: a BLIP captioner, a SigLIP / SigLIP 2 / CLIP
recogniser, loaded on first use) supplies the caption and the classes to segment; labels still index
`classes` (label k = classes[k - 1]) whatever subset was segmented.

Stages (spec steps 1-8): prompts -> encode -> invert -> reconstruct -> hard -> ttf -> labels.
The backend runs the four networks; everything else is device-side torch code here, with the
results copied to the host at the end (the scores, when kept, and the labels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from faseg_rt import rules
from faseg_rt.backends import Backend, load_backend
from faseg_rt.batches import contiguous, groups, network_batches, pad_chunks, per_image_classes
from faseg_rt.config import FASegConfig
from faseg_rt.devices import default_device_dtype
from faseg_rt.errors import InvalidInputError
from faseg_rt.frontend.candidates import MODES
from faseg_rt.frontend.plan import FrontEnd, ImagePlan, one_per_image
from faseg_rt.images import load_image, pair_pixels, preprocess
from faseg_rt.method.hard import class_maps_fused, hard
from faseg_rt.method.inversion import fixed_noise, invert, sample_latents
from faseg_rt.method.prompts import DualPrompts, build_dual_prompts
from faseg_rt.method.ttf import labels_from_scores, resize_labels, ttf, ttf_labels
from faseg_rt.precision import PrecisionPolicy
from faseg_rt.profiling import stage
from faseg_rt.results import SegmentationResult
from faseg_rt.rules import normalize_classes
from faseg_rt.text_cache import VocabularyCache, compact, device_token_matrix

# Class prompts encoded per text-encoder call: bounds its activations for long vocabularies.
TEXT_BATCH = 64


@dataclass(frozen=True)
class TextEmbeddings:
    """Encoded dual prompts of one (caption, classes): full (77, D) and chunks (J, 77, D)."""

    prompts: DualPrompts
    full: torch.Tensor
    chunks: torch.Tensor


class Segmenter:
    """FA-Seg on one loaded model.  Thread-safe: calls share no mutable state but a text cache.

    text_cache_size: full prompts (caption + classes) whose embeddings are kept.
    text_cache_mb: budget of the per-vocabulary cache of class-prompt embeddings; a vocabulary
        whose embeddings alone exceed it is refused up front.
    max_class_chunks: the most 77-token class-prompt chunks one call may use (the class-aware
        maps of the reconstruction pass grow with it); more is refused up front.
    compile: None / False, True or a torch.compile backend name: HARD and TTF through
        torch.compile (from_pretrained passes its own `compile` here too).
    batch_invariant: segment_batch's default (see there): True, each image's answer equals
        its single call's byte for byte; False, images share network passes.
    """

    #: `result.scores` ((K, image_size, image_size) float32: 1 MiB per class at 512 px) is
    #: returned by default up to this many classes; above, only with return_scores=True, so a
    #: large vocabulary never holds K full-resolution maps by default.
    SCORES_DEFAULT_MAX_CLASSES = 64

    def __init__(self, backend: Backend, tokenizer, config: FASegConfig | None = None,
                 text_cache_size: int = 64, text_cache_mb: float = 512, max_class_chunks: int = 256,
                 frontend: FrontEnd | None = None, compile=None, batch_invariant: bool = True):
        self.config = config or FASegConfig()
        self.batch_invariant = rules.batching(batch_invariant)
        # a shared backend computes what this config reads (torch), or refuses it (exported graphs)
        self.backend = backend = backend.for_config(self.config)
        self.frontend = frontend if frontend is not None else FrontEnd()
        self.tokenizer = tokenizer
        if tokenizer.model_max_length != backend.dims.text_len:
            raise InvalidInputError(
                f"tokenizer length {tokenizer.model_max_length} != text encoder length {backend.dims.text_len}")
        self._noise = fixed_noise(self.config, backend.dims.latent_channels).to(backend.device)
        self._token_mats = VocabularyCache(64 * 2**20)  # device token matrices (12 MB at K=1000)
        self._timestep = torch.tensor([self.config.timestep], dtype=torch.int64, device=backend.device)
        self._text_cache = VocabularyCache(max_entries=rules.positive_int(text_cache_size, "text_cache_size"))
        self._vocab_cache = VocabularyCache(int(text_cache_mb * 2**20))
        # class prompts (token ids and spans) per vocabulary: tokenised once, whatever the caption
        self._class_prompts = VocabularyCache(max_entries=self._text_cache.max_entries)
        self.max_class_chunks = rules.positive_int(max_class_chunks, "max_class_chunks")
        from faseg_rt.backends.fast import compile_backend, compiled

        method_backend = compile_backend(compile)  # HARD and TTF through torch.compile, or as they are
        self._hard, self._ttf = compiled(hard, method_backend), compiled(ttf, method_backend)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, model, *, backend: str = "torch", device=None, dtype=None,
                        engines=None, config: FASegConfig | None = None, compile=None,
                        cuda_graphs: bool = False, batch_invariant: bool = True, **frontend) -> "Segmenter":
        """Load a diffusers SD 1.x directory or hub id with a backend ("torch", "onnxruntime",
        "tensorrt"; the latter two run graphs exported to `engines` by export/build_engines.py).

        compile (True / a torch.compile backend name) and cuda_graphs: the torch fast path
        (faseg_rt/backends/fast.py); compile also compiles HARD and TTF.  Both off by default.
        batch_invariant: see segment_batch (True by default).

        Front end (used only by caption="auto" and the candidate modes, loaded on first use on
        this segmenter's device, in the dtypes of its precision policy): captioner=ID_OR_DIR
        (BLIP), recognizer=ID_OR_DIR (SigLIP, SigLIP 2 or CLIP), candidate_threshold,
        max_candidates, generation, lexicon ({class: [words]} naming classes in captions); see
        faseg_rt.frontend.plan.
        config: None reads the model directory's faseg_config.json (faseg_rt.model.model_config).
        """
        from faseg_rt.model import load_tokenizer, model_config

        device, dtype = default_device_dtype(device, dtype)
        config = config if config is not None else model_config(model)
        front = FrontEnd(**frontend)  # bad thresholds fail before the model loads
        tokenizer = load_tokenizer(model)
        be = load_backend(backend, model, device=device, dtype=dtype, engines=engines, config=config,
                          compile=compile, cuda_graphs=cuda_graphs)
        return cls(be, tokenizer, config, frontend=front, compile=compile, batch_invariant=batch_invariant)

    def to(self, device, dtype: torch.dtype | None = None) -> "Segmenter":
        """Move to another device / dtype (torch backend); returns self, like nn.Module.to."""
        device = rules.device(device)
        device, dtype = default_device_dtype(device, dtype or (
            self.dtype if device.type == self.device.type else None))
        self.backend = self.backend.to(device, dtype)
        self._timestep = self._timestep.to(self.backend.device)
        self._noise = self._noise.to(self.backend.device)
        self._token_mats.clear()
        self.clear_text_cache()
        return self

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backend.dtype

    @property
    def precision(self) -> PrecisionPolicy:
        """Each stage's dtype as applied (faseg_rt.precision; resolved once by the backend)."""
        return self.backend.precision

    # ------------------------------------------------------------------ prompts
    def clear_text_cache(self) -> None:
        """Forget every cached prompt embedding (full prompts and per-vocabulary chunks)."""
        self._text_cache.clear()
        self._vocab_cache.clear()
        self._class_prompts.clear()

    def _cached_text(self, key) -> tuple | None:
        try:
            return self._text_cache.get(key)
        except TypeError:  # unhashable items: not a valid class list, build_dual_prompts says so
            return None

    def check_vocabulary(self, prompts: DualPrompts) -> None:
        """Refuse, before any network runs, a vocabulary too large for one call."""
        j, dims = len(prompts.chunks), self.backend.dims
        if j > self.max_class_chunks:
            per_chunk = sum(r * r for r, w in self.config.cross_weights.items() if w) * dims.text_len * 8
            raise InvalidInputError(
                f"{prompts.num_classes} classes need {j} class-prompt chunks of "
                f"{dims.text_len - 2} tokens; at most {self.max_class_chunks} fit in one call "
                f"(each adds ~{per_chunk / 2**20:.1f} MiB of class-aware maps per image): split "
                "the vocabulary over several calls, or raise Segmenter.max_class_chunks")
        need = j * dims.text_len * dims.text_dim * torch.finfo(self.precision["text_encoder"]).bits // 8
        if need > self._vocab_cache.max_bytes:
            raise InvalidInputError(
                f"the {prompts.num_classes}-class vocabulary's prompt embeddings take "
                f"{need / 2**20:.0f} MiB, over the text cache's {self._vocab_cache.max_bytes / 2**20:.0f}"
                " MiB: split the vocabulary, or pass a larger text_cache_mb to Segmenter")

    def _encode_ids(self, ids: list) -> torch.Tensor:
        """(P, 77) token ids -> (P, 77, D) embeddings, TEXT_BATCH prompts per encoder call (fewer
        when the backend's text encoder takes fewer: an engine profile's limit)."""
        out = []
        step = min(TEXT_BATCH, self.backend.max_prompts or TEXT_BATCH)
        for start in range(0, len(ids), step):
            t = torch.tensor(ids[start:start + step], dtype=torch.int64, device=self.device)
            with stage("text_encoder", self.device):
                out.append(self.backend.text_encoder(input_ids=t)["last_hidden_state"])
        return out[0] if len(out) == 1 else torch.cat(out)

    def _prompts(self, classes, caption: str | None = None) -> DualPrompts:
        """build_dual_prompts, with the class prompts of a vocabulary seen before reused."""
        classes = normalize_classes(classes)
        chunks = self._class_prompts.get(classes)
        prompts = build_dual_prompts(self.tokenizer, classes, caption, chunks=chunks)
        if chunks is None:
            self._class_prompts.put(classes, prompts.chunks)
        return prompts

    def encode_text(self, classes: Sequence[str], caption: str | None = None) -> TextEmbeddings:
        """Dual prompts and their embeddings.  The full prompt's (77, D) embedding is cached per
        (caption, classes) and the class-prompt chunks per vocabulary (under the byte budget,
        the only cache that holds them), so a new caption encodes only its full prompt."""
        hit = None
        if isinstance(classes, (list, tuple)) and (caption is None or isinstance(caption, str)):
            hit = self._cached_text((caption, tuple(classes)))   # already-normal names: no
        if hit is None:                                           # tokenizing 1000 classes again
            prompts = self._prompts(classes, caption)
            hit = self._cached_text((prompts.caption, prompts.classes))
        if hit is None:
            self.check_vocabulary(prompts)
            hit = (prompts, compact(self._encode_ids([prompts.full_ids])[0]))
            self._text_cache.put((prompts.caption, prompts.classes), hit)
        prompts, full = hit
        chunks = self._vocab_cache.get(prompts.classes)
        if chunks is None:  # new, or evicted since: encoded again (the same embeddings)
            chunks = compact(self._encode_ids([c.input_ids for c in prompts.chunks]))
            self._vocab_cache.put(prompts.classes, chunks)
        return TextEmbeddings(prompts, full, chunks)

    # ------------------------------------------------------------------ tensor-level stages
    def attention_summaries(self, batch: torch.Tensor, texts: Sequence[TextEmbeddings]) -> dict[str, torch.Tensor]:
        """Encode, invert and reconstruct (spec steps 2-4) for B images.

        batch: (B, 3, size, size) uint8 images resized to config.image_size; texts: one
        TextEmbeddings per image.
        Returns the unet_attn summaries for the 2B latents [image 0, mirror 0, image 1, ...].
        """
        be, cfg, prec = self.backend, self.config, self.precision   # prec: each stage's dtype
        with stage("vae_encoder", be.device):
            pixels = pair_pixels(batch.to(be.device), prec["vae_encoder"])         # (2B, 3, s, s)
            moments = be.vae_encoder(pixels=pixels)["moments"]
            z0 = sample_latents(moments.to(prec["inversion"]), self._noise, be.dims.scaling_factor)
        full = torch.stack([t.full for t in texts]).repeat_interleave(2, dim=0)   # (2B, 77, D)
        with stage("unet_inversion", be.device):
            eps = be.unet(latents=z0.to(prec["unet"]), timestep=self._timestep,
                          encoder_hidden_states=full)["eps"]
            z1 = invert(z0, eps.to(prec["inversion"]), cfg)
        n_chunks = max(t.chunks.shape[0] for t in texts)
        chunks = torch.stack([pad_chunks(t.chunks, n_chunks) for t in texts])
        chunks = chunks.repeat_interleave(2, dim=0)                                # (2B, J, 77, D)
        with stage("unet_reconstruction", be.device):
            return be.unet_attn(latents=z1.to(prec["unet"]), timestep=self._timestep,
                                encoder_hidden_states=full, class_hidden_states=chunks)

    def refine_maps(self, summaries: dict[str, torch.Tensor], prompts: DualPrompts,
                    rows: slice | torch.Tensor | None = None) -> torch.Tensor:
        """Cross fusion and HARD (spec steps 5-6) for images sharing one class list.

        rows selects the latents (2 per image) of those images.  Returns (2b, K, s, s) in the
        policy's hard dtype at the latent resolution: small, so any vocabulary fits.
        """
        cfg = self.config
        rows = rows if rows is not None else slice(None)
        s = cfg.latent_size
        with stage("hard", self.device):
            cross = {r: summaries[f"cross_{r}"][rows].to(self.precision["hard"]) for r in cfg.resolutions}
            j = cross[s].shape[1]
            tm = device_token_matrix(self._token_mats, prompts, j, self.backend.dims.text_len, self.device)  # (J*77, K)
            maps = class_maps_fused(cross, cfg.cross_weights, tm, s)                  # (n, K, s, s)
            self_attn = {r: summaries[f"self_{r}"][rows] for r in cfg.resolutions if r != s}
            return self._hard(maps, self_attn, summaries[f"q_{s}"][rows], summaries[f"k_{s}"][rows],
                              cfg.self_weights, cfg.tau)

    def refine(self, summaries: dict[str, torch.Tensor], prompts: DualPrompts,
               rows: slice | torch.Tensor | None = None) -> torch.Tensor:
        """Cross fusion, HARD and TTF (spec steps 5-7): (b, K, size, size) scores in the policy's
        ttf dtype (size = config.image_size)."""
        m = self.refine_maps(summaries, prompts, rows)
        with stage("ttf", self.device):
            return self._ttf(m.to(self.precision["ttf"]), self.config.image_size)

    # ------------------------------------------------------------------ user API
    def __call__(self, image, classes: Sequence[str], caption: str | None = None,
                 threshold: float | None = None, candidates=None,
                 return_scores: bool | None = None, exif_transpose: bool = False
                 ) -> SegmentationResult:
        """Segment one image (path, PIL image or uint8 array) into `classes` (+ background).

        caption: a string, None, or "auto" (the captioner's caption of the image).
        candidates: None (segment every class); "auto" (the classes the caption names united
        with the recogniser's); "caption" (the caption's only); "recognizer" (the recogniser's
        only); or a list of names from `classes`, segmented in the given order.  A caption mode
        on an image without a caption has the captioner write one (also used as the prompt).
        Labels index `classes` whatever was kept; no candidate gives an all-background mask;
        result.sources says which route found each class (faseg_rt.frontend.candidates).
        return_scores: see segment_batch.
        exif_transpose: turn the image as its EXIF orientation says before anything else (a
        phone photo); the default keeps the stored pixels, as datasets' annotations do.
        """
        return self.segment_batch([image], classes, captions=[caption], batch_size=1,
                                  threshold=threshold, candidates=[candidates],
                                  return_scores=return_scores, exif_transpose=exif_transpose)[0]

    def segment_batch(self, images: Sequence, classes, captions: Sequence[str | None] | None = None,
                      batch_size: int = 8, threshold: float | None = None,
                      progress: bool = False, candidates=None, return_scores: bool | None = None,
                      exif_transpose: bool = False, batch_invariant: bool | None = None
                      ) -> list[SegmentationResult]:
        """Segment many images, one at a time or `batch_size` per network call (batch_invariant).

        classes: one class list for all images, or one list per image.
        captions: None, "auto", or one caption (a string, None or "auto") per image.
        candidates: None, a mode ("auto", "caption", "recognizer"), or one entry (None, a mode
            or a list of names) per image; see __call__.  Captioner and recogniser run on the
            images of each network batch together.
        exif_transpose: see __call__.
        return_scores: keep the (K, size, size) score maps in each result. None (default): only
            up to SCORES_DEFAULT_MAX_CLASSES classes. Without them, labels are computed over
            class chunks with memory independent of K (and bit-identical to thresholding the
            scores).
        batch_invariant: None (the segmenter's, True by default): each image runs alone through
            the front end, the networks, HARD and TTF, so its result is byte-identical to
            __call__'s whatever shares the call (batch_size has no effect then).  False:
            batch_size images share each network pass (faster where batching pays, e.g. a GPU;
            a batched matrix product may round differently, so a few pixels can differ from
            single calls: benchmarks/README.md, "Serving").
        """
        images = list(images)
        threshold = rules.threshold(self.config.threshold if threshold is None else threshold)
        batch_size = rules.batch_size(batch_size)
        invariant = self.batch_invariant if batch_invariant is None else rules.batching(batch_invariant)
        self.backend.check_batch(1 if invariant else min(batch_size, len(images)))
        vocabularies = [normalize_classes(c) for c in per_image_classes(classes, len(images))]
        captions = one_per_image(captions, len(images), "captions")
        candidates = one_per_image(candidates, len(images), "candidates", MODES)
        for vocab in {tuple(v) for v, c in zip(vocabularies, candidates) if c is None}:
            if self._vocab_cache.get(vocab) is None:  # new vocabulary: too large fails before any work
                self.check_vocabulary(self._prompts(vocab))

        results: list[SegmentationResult] = []
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(images), unit="img", desc="faseg")
        for chunk in network_batches(len(images), batch_size, invariant):
            with stage("load_image"):
                pil = [load_image(x, exif_transpose) for x in images[chunk]]
            plans = self.frontend.plan(pil, vocabularies[chunk], captions[chunk], candidates[chunk],
                                       device=self.device, precision=self.precision, batch_size=len(pil))
            results += self._segment_planned(pil, plans, threshold, return_scores)
            if bar is not None:
                bar.update(len(pil))
        if bar is not None:
            bar.close()
        return results

    def _segment_planned(self, pil, plans: Sequence[ImagePlan], threshold,
                         return_scores=None) -> list[SegmentationResult]:
        """Run the method on the images with something to segment; results over each vocabulary."""
        run = [i for i, p in enumerate(plans) if p.segment]
        texts = [self.encode_text(plans[i].segment, plans[i].caption) for i in run]
        done = dict(zip(run, self._segment_loaded([pil[i] for i in run], texts, threshold, return_scores)
                        if run else []))
        return [p.finish(done.get(i), pil[i], threshold, self.config.image_size)
                for i, p in enumerate(plans)]

    def _segment_loaded(self, pil, texts, threshold, return_scores=None) -> list[SegmentationResult]:
        with stage("resize"):
            batch = preprocess(pil, self.config.image_size)
        summaries = self.attention_summaries(batch, texts)
        out: list[SegmentationResult | None] = [None] * len(pil)
        for group in groups(texts):
            rows = slice(2 * group[0], 2 * group[-1] + 2) if contiguous(group) else \
                torch.tensor([2 * i + h for i in group for h in (0, 1)], device=self.device)
            prompts = texts[group[0]].prompts
            keep = (prompts.num_classes <= self.SCORES_DEFAULT_MAX_CLASSES if return_scores is None
                    else bool(return_scores))
            if keep:
                scores = self.refine(summaries, prompts, rows)                      # (b, K, size, size)
                with stage("ttf", self.device):
                    labels = labels_from_scores(scores, threshold)                  # (b, size, size)
            else:  # labels over class chunks: memory independent of K
                scores, maps = None, self.refine_maps(summaries, prompts, rows)     # (2b, K, s, s)
                with stage("ttf", self.device):
                    labels = ttf_labels(maps.to(self.precision["ttf"]), self.config.image_size, threshold)
            with stage("labels", self.device):
                labels = [resize_labels(labels[b], pil[i].size[1], pil[i].size[0]).to(torch.int32)
                          for b, i in enumerate(group)]
                scores_host = scores.float().cpu().numpy() if keep else [None] * len(group)  # float32 results
                labels = [lab.cpu().numpy() for lab in labels]
            for b, i in enumerate(group):
                out[i] = SegmentationResult(
                    labels=labels[b], scores=scores_host[b], classes=texts[i].prompts.classes,
                    threshold=threshold, caption=texts[i].prompts.caption, image=pil[i])
        return out
