"""Tiny random front-end models (BLIP captioner, SigLIP, SigLIP 2 and CLIP recognisers), built
offline.

Each is the real transformers architecture (BlipForConditionalGeneration, SiglipModel,
Siglip2Model, CLIPModel) with tiny widths (hidden 32, 2 layers, 32 px images in 8 px patches),
its processor and a tokenizer made here without a download, saved with `save_pretrained` into a
directory that loads through the same `from_pretrained` path as a real checkpoint.  `make_blip`
and `make_siglip` with `real=True` give the real sizes instead (BLIP-large; transformers' default
SigLIP, i.e. siglip-base-patch16-224) with random weights, in memory, for latency benchmarks.

Tokenizers:
- BLIP: a BERT WordPiece tokenizer over a small written vocab.txt, with BLIP's "[DEC]" as its
  BOS token (the decoder's start token, as in the Salesforce checkpoints).
- SigLIP: a SentencePiece model trained here on a few lines of captions (the `sentencepiece`
  package), wrapped in transformers' SiglipTokenizer like the real checkpoints.
- SigLIP 2: a SentencePiece BPE model with byte fallback and Gemma's special pieces (<pad> 0,
  <eos> 1, <bos> 2, <unk> 3, <mask> 4) trained here on the same lines, loaded as transformers'
  GemmaTokenizer with the settings transformers' SigLIP 2 conversion gives the real checkpoints
  (no BOS, EOS appended, right padding, input_ids only).  Like theirs it does not lower-case.
- CLIP: the project's CLIP BPE tokenizer writer (tiny_sd.write_clip_tokenizer).

SigLIP 2 comes in both shapes: NaFlex (Siglip2Model + Siglip2Processor, model_type "siglip2") and
fixed resolution (SiglipModel + SiglipProcessor with the Gemma tokenizer, model_type "siglip",
as google/siglip2-base-patch16-224 ships).  Their text length (64) and the NaFlex patch size and
budget (16 px, 256 patches) are the real ones, so that transformers used as documented (the
model card's max_length=64; Siglip2Processor.__call__, which imposes 256 patches of 16 px
whatever the checkpoint says) is a valid reference in the tests; widths stay tiny.

SigLIP's (and SigLIP 2's) logit scale and bias are set to exp(s) = 20, b = -2 (random init would
give s = b = 0 and every probability ~0.5), so the tiny recogniser's scores spread over (0, 1)
and the threshold and max-count rules have something to select.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import torch

BLIP_WORDS = ("a an the of in on with and at is are two three small large red green blue white "
              "black photo picture man woman dog cat car bus street room table chair sky grass "
              "tree water boat plane bird horse sheep cow bottle sofa plant train person people "
              "sitting standing next to front view close up").split()

CAPTION_LINES = [
    "a photo of a cat sitting on a sofa", "two dogs playing in the grass",
    "a red car parked on the street", "a man riding a horse next to a tree",
    "a plane flying in the blue sky", "a bottle on a wooden table", "a cropped photo of a bird",
    "this is a photo of a potted plant", "a photo of a scene with people and a bus",
    "a boat on the water at sunset", "three sheep and a cow in a field", "a train at the station",
    "a photo containing a chair and a dining table", "a close up photo of the motorbike",
    "a tv monitor in a living room", "a bicycle leaning against a wall",
]

# real=False widths: enough layers and heads to exercise every code path, ~50k parameters each.
TINY_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
TINY_IMAGE = dict(image_size=32, patch_size=8)


def _save_atomically(out: Path, write) -> Path:
    """Run write(tmp_dir), then rename tmp_dir to out (a crash leaves no half-built model)."""
    from faseg_rt.hub import quiet_loading

    if (out / "config.json").exists():
        return out
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with quiet_loading():  # no progress bars or config chatter while building
        write(tmp)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def blip_tokenizer(out_dir: Path, vocab_size: int | None = None):
    """A BERT WordPiece tokenizer over BLIP_WORDS with "[DEC]" as BOS (written to out_dir).

    vocab_size: pad the word list with "[unusedN]" entries up to this size (BLIP-large's 30522,
    so the random decoder has the real output projection).
    """
    from transformers import BertTokenizer

    vocab = list(dict.fromkeys(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + BLIP_WORDS +
                               [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] +
                               list("abcdefghijklmnopqrstuvwxyz.,")))
    vocab += [f"[unused{i}]" for i in range((vocab_size or 0) - len(vocab))]
    path = Path(out_dir) / "vocab.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(str(path), do_lower_case=True, model_max_length=512)
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    return tok


def make_blip(work_dir: Path, *, seed: int = 0, real: bool = False):
    """(BlipForConditionalGeneration, BlipProcessor) with random weights, in memory.

    Tiny: its generation config asks for max_length 12 and 2 beams, so tests can tell the
    checkpoint's own settings from transformers' defaults (20, greedy).  Real: transformers'
    defaults, what a checkpoint without a generation_config.json gets.
    """
    from transformers import (BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor, GenerationConfig)

    tok = blip_tokenizer(work_dir, 30522 if real else None)
    if real:  # Salesforce/blip-image-captioning-large: ViT-L/16 at 384 px, BERT-base decoder
        vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                      num_attention_heads=16, image_size=384, patch_size=16)
        text = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                    num_attention_heads=12, encoder_hidden_size=1024, max_position_embeddings=512)
    else:  # init std 0.1, not 0.02: with the default the captions ignore the image
        vision = dict(TINY_TOWER, **TINY_IMAGE, initializer_range=0.1)
        text = dict(TINY_TOWER, encoder_hidden_size=32, initializer_range=0.1,
                    max_position_embeddings=64)
    text.update(vocab_size=len(tok), bos_token_id=tok.bos_token_id, sep_token_id=tok.sep_token_id,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id)
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(BlipConfig(vision_config=vision, text_config=text,
                                                    initializer_range=0.02 if real else 0.1))
    model.generation_config = GenerationConfig() if real else GenerationConfig(max_length=12, num_beams=2)
    size = vision["image_size"]
    processor = BlipProcessor(
        BlipImageProcessor(size={"height": size, "width": size},
                           image_mean=[0.48145466, 0.4578275, 0.40821073],
                           image_std=[0.26862954, 0.26130258, 0.27577711]), tok)
    return model.eval(), processor


def siglip_tokenizer(out_dir: Path, max_length: int):
    """A SentencePiece unigram model trained on CAPTION_LINES, as a SiglipTokenizer."""
    import sentencepiece as spm
    from transformers import SiglipTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = out_dir / "corpus.txt"
    corpus.write_text("\n".join(CAPTION_LINES * 4) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out_dir / "spiece"), vocab_size=120,
        model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False,
        minloglevel=2, num_threads=1)
    return SiglipTokenizer(str(out_dir / "spiece.model"), model_max_length=max_length)


def make_siglip(work_dir: Path, *, seed: int = 0, real: bool = False):
    """(SiglipModel, SiglipProcessor) with random weights, in memory.

    Real: transformers' default SiglipConfig (= google/siglip-base-patch16-224) except the text
    vocabulary, which is the tiny tokenizer's (the text tower runs once per vocabulary, cached).
    """
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    max_length = 64 if real else 16
    tok = siglip_tokenizer(work_dir, max_length)
    if real:
        base = SiglipConfig()
        vision, text = base.vision_config.to_dict(), base.text_config.to_dict()
    else:
        vision = dict(TINY_TOWER, **TINY_IMAGE)
        text = dict(TINY_TOWER, max_position_embeddings=max_length)
    text.update(vocab_size=len(tok), pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                bos_token_id=None)
    torch.manual_seed(seed)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    with torch.no_grad():
        model.logit_scale.fill_(math.log(20.0))
        model.logit_bias.fill_(-2.0)
    size = vision["image_size"]
    processor = SiglipProcessor(SiglipImageProcessor(size={"height": size, "width": size}), tok)
    return model.eval(), processor


def gemma_tokenizer(out_dir: Path):
    """A SentencePiece BPE model trained on CAPTION_LINES, as a SigLIP 2 style GemmaTokenizer."""
    import sentencepiece as spm
    from transformers import GemmaTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = out_dir / "corpus.txt"
    corpus.write_text("\n".join(CAPTION_LINES * 4) + "\n")
    # Gemma's layout: byte fallback (256 byte pieces, so vocab >= 260), no dummy prefix, raw spaces
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out_dir / "tokenizer"), vocab_size=400, model_type="bpe",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
        bos_piece="<bos>", unk_piece="<unk>", user_defined_symbols=["<mask>"], byte_fallback=True,
        split_digits=True, add_dummy_prefix=False, remove_extra_whitespaces=False,
        normalization_rule_name="identity", hard_vocab_limit=False, minloglevel=2, num_threads=1)
    return GemmaTokenizer.from_pretrained(out_dir, add_bos_token=False, add_eos_token=True,
                                          padding_side="right", model_input_names=["input_ids"])


def make_siglip2(work_dir: Path, *, seed: int = 0, naflex: bool = True):
    """(Siglip2Model, Siglip2Processor) for NaFlex, else (SiglipModel, SiglipProcessor) with the
    Gemma tokenizer (fixed-resolution SigLIP 2); tiny, random weights, in memory."""
    import transformers as tf

    tok = gemma_tokenizer(work_dir)
    text = dict(TINY_TOWER, vocab_size=len(tok), max_position_embeddings=64,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    if naflex:
        vision = dict(TINY_TOWER, patch_size=16, num_patches=256)
        model = tf.Siglip2Model(tf.Siglip2Config(text_config=text, vision_config=vision))
        processor = tf.Siglip2Processor(tf.Siglip2ImageProcessor(patch_size=16, max_num_patches=256), tok)
    else:
        model = tf.SiglipModel(tf.SiglipConfig(text_config=text, vision_config=dict(TINY_TOWER, **TINY_IMAGE)))
        size = TINY_IMAGE["image_size"]
        processor = tf.SiglipProcessor(tf.SiglipImageProcessor(size={"height": size, "width": size}), tok)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(20.0))
        model.logit_bias.fill_(-2.0)
    return model.eval(), processor


def make_clip(work_dir: Path, *, seed: int = 0):
    """(CLIPModel, CLIPProcessor), tiny, random weights, the real CLIP BPE tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from faseg_rt.testing.tiny_sd import write_clip_tokenizer

    write_clip_tokenizer(work_dir)
    tok = CLIPTokenizer.from_pretrained(work_dir)
    text = dict(TINY_TOWER, vocab_size=len(tok), max_position_embeddings=77,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=dict(TINY_TOWER, **TINY_IMAGE),
                                 projection_dim=16))
    processor = CLIPProcessor(CLIPImageProcessor(size={"shortest_edge": 32},
                                                 crop_size={"height": 32, "width": 32}), tok)
    return model.eval(), processor


def _build(make, out_dir, **kw) -> Path:
    """make(work_dir, **kw) -> (model, processor), saved with save_pretrained into out_dir."""
    def write(tmp: Path) -> None:
        model, processor = make(tmp / "_tokenizer", **kw)
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        shutil.rmtree(tmp / "_tokenizer")

    return _save_atomically(Path(out_dir), write)


def build_tiny_blip(out_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny BLIP captioning checkpoint (random weights) under out_dir; returns the directory."""
    return _build(make_blip, out_dir, seed=seed)


def build_tiny_siglip(out_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny SigLIP checkpoint (random weights) under out_dir; returns the directory."""
    return _build(make_siglip, out_dir, seed=seed)


def build_tiny_siglip2(out_dir: str | os.PathLike, *, seed: int = 0, naflex: bool = True) -> Path:
    """A tiny SigLIP 2 checkpoint (random weights) under out_dir: NaFlex (model_type "siglip2"),
    or with naflex=False fixed resolution (model_type "siglip", Gemma tokenizer)."""
    return _build(make_siglip2, out_dir, seed=seed, naflex=naflex)


def build_tiny_clip(out_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """A tiny CLIP checkpoint (random weights, the real CLIP BPE tokenizer) under out_dir."""
    return _build(make_clip, out_dir, seed=seed)


def build_tiny_frontend(root: str | os.PathLike, *, seed: int = 0) -> dict[str, Path]:
    """All tiny checkpoints under root/tiny-{blip,siglip,siglip2,siglip2-fixres,clip}, keyed by
    those names; idempotent.  The two SigLIP 2 ones add ~0.2 s to the ~5 s of the others."""
    root = Path(root)
    return {"blip": build_tiny_blip(root / "tiny-blip", seed=seed),
            "siglip": build_tiny_siglip(root / "tiny-siglip", seed=seed),
            "siglip2": build_tiny_siglip2(root / "tiny-siglip2", seed=seed),
            "siglip2-fixres": build_tiny_siglip2(root / "tiny-siglip2-fixres", seed=seed, naflex=False),
            "clip": build_tiny_clip(root / "tiny-clip", seed=seed)}
