"""How each recogniser family wants its prompts and images fed: the inputs its towers were
trained on, as keyword tensors for `get_text_features` / `get_image_features`.

Text (`TextRule`, from the family and the tokenizer):
- SigLIP and SigLIP 2: every prompt padded on the right, and truncated, to the text tower's
  position count (`text_config.max_position_embeddings`: 64 for the released checkpoints), and
  only `input_ids` passed.  Both pool the last position, a pad token for short prompts, and were
  trained without a text mask (big_vision; transformers' SigLIP 2 conversion builds its tokenizer
  without an attention_mask for that reason), so any other length, side or a mask would give
  embeddings the model never saw.  The length comes from the model, not the tokenizer: a Gemma
  tokenizer's `model_max_length` need not be 64 (the model card asks for max_length=64).
- SigLIP 2 also lower-cases the prompts first: the paper trains on lower-cased text and the
  checkpoints' Gemma tokenizer does not lower-case (only transformers' own Siglip2Tokenizer,
  which AutoTokenizer picks for NaFlex checkpoints, does; lower-casing twice changes nothing).
  A "siglip" checkpoint is SigLIP 2 when its tokenizer is a Gemma (or Siglip2) tokenizer: the
  fixed-resolution SigLIP 2 checkpoints (google/siglip2-base-patch16-224, ...) reuse SiglipModel
  and model_type "siglip"; the difference the runtime sees is the tokenizer (Gemma, 256k pieces,
  against SigLIP's T5 SentencePiece, which lower-cases by itself).
- CLIP: padded to the longest prompt, with its attention_mask (causal text tower, EOS pooling).

Images: SigLIP and CLIP take `pixel_values` at the checkpoint's fixed size.  SigLIP 2 NaFlex
("siglip2") resizes each image, keeping its aspect ratio as far as whole patches allow, to the
largest size with at most `max_num_patches` patches, cuts it into patches and pads the patch
sequence to exactly `max_num_patches`: `pixel_values` (B, N, 3 * p * p), `pixel_attention_mask`
(B, N) and `spatial_shapes` (B, 2) rows / columns of patches.  Images of any sizes therefore
share one batch, and an image's embedding does not depend on the others in it.  The image
processor is called directly with the checkpoint's own settings: `Siglip2Processor.__call__`
would replace them with its class defaults (256 patches of 16 px).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from faseg_rt import rules
from faseg_rt.errors import InvalidInputError, ModelLoadError

#: model_type -> (transformers model class, the name users see in messages).
FAMILIES = {
    "siglip": ("SiglipModel", "SigLIP or fixed-resolution SigLIP 2 (SiglipModel)"),
    "siglip2": ("Siglip2Model", "SigLIP 2 NaFlex (Siglip2Model)"),
    "clip": ("CLIPModel", "CLIP (CLIPModel)"),
}

#: Tokenizer classes of SigLIP 2 checkpoints (transformers 4 names the fast one ...Fast).
SIGLIP2_TOKENIZERS = ("GemmaTokenizer", "GemmaTokenizerFast", "Siglip2Tokenizer")


def model_class(family: str):
    """The transformers class that loads a checkpoint of `family`."""
    import transformers

    cls = getattr(transformers, FAMILIES[family][0], None)
    if cls is None:  # Siglip2Model came with transformers 4.49
        raise ModelLoadError(f"{FAMILIES[family][1]} needs a newer transformers than "
                             f"{transformers.__version__}: pip install -U 'transformers>=4.49'")
    return cls


def has_siglip2_tokenizer(tokenizer) -> bool:
    """True for the Gemma-based tokenizers of SigLIP 2 (by class, subclasses included)."""
    return any(c.__name__ in SIGLIP2_TOKENIZERS for c in type(tokenizer).__mro__)


@dataclass(frozen=True)
class TextRule:
    """How prompts become text-tower inputs (module docstring).

    length: pad on the right and truncate to this many tokens (None: pad to the longest prompt);
    mask: pass the tokenizer's attention_mask; lowercase: lower-case the prompts first.
    """

    length: int | None
    mask: bool
    lowercase: bool


def text_rule(family: str, model, tokenizer) -> TextRule:
    if family == "clip":
        return TextRule(length=None, mask=True, lowercase=False)
    length = int(model.config.text_config.max_position_embeddings)
    return TextRule(length=length, mask=False,
                    lowercase=family == "siglip2" or has_siglip2_tokenizer(tokenizer))


def text_inputs(tokenizer, texts: list[str], rule: TextRule) -> dict[str, torch.Tensor]:
    """{"input_ids" (P, L)[, "attention_mask" (P, L)]} for `texts` under `rule` (CPU tensors)."""
    if rule.lowercase:
        texts = [t.lower() for t in texts]
    if rule.length is None:
        enc = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    else:  # right padding set on the tokenizer, not as a call argument (transformers < 4.46)
        side = getattr(tokenizer, "padding_side", "right")
        tokenizer.padding_side = "right"
        try:
            enc = tokenizer(texts, padding="max_length", max_length=rule.length, truncation=True,
                            return_tensors="pt")
        finally:
            tokenizer.padding_side = side
    keep = ("input_ids", "attention_mask") if rule.mask else ("input_ids",)
    return {k: enc[k] for k in keep}


def unknown_token_names(tokenizer, names, rule: TextRule) -> list[str]:
    """The names whose tokens include the tokenizer's unknown token (all pieces it cannot read
    share that one token, so such names cannot be told apart)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None or not names:
        return []
    texts = [n.lower() for n in names] if rule.lowercase else list(names)
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [n for n, row in zip(names, ids) if unk in row]


def check_max_num_patches(value, family: str) -> int | None:
    """None (the checkpoint's setting) or an integer >= 1, for NaFlex checkpoints only."""
    if value is None:
        return None
    if family != "siglip2":
        raise InvalidInputError(f"max_num_patches applies to SigLIP 2 NaFlex checkpoints only, "
                                f"not to a {family!r} recogniser")
    return rules.positive_int(value, "max_num_patches")


def image_inputs(image_processor, family: str, images: list, device, dtype,
                 max_num_patches: int | None = None) -> dict[str, torch.Tensor]:
    """The vision tower's keyword inputs for PIL `images`, on `device` (pixels in `dtype`)."""
    kw = {} if max_num_patches is None else {"max_num_patches": max_num_patches}
    out = image_processor(images=images, return_tensors="pt", **kw)
    inputs = {"pixel_values": out["pixel_values"].to(device, dtype)}
    if family == "siglip2":  # which patches are image, and each image's patch grid
        inputs["pixel_attention_mask"] = out["pixel_attention_mask"].to(device)
        inputs["spatial_shapes"] = out["spatial_shapes"].to(device)
    return inputs
