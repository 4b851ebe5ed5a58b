"""Tiny offline models with random weights, built from configs and saved with save_pretrained,
for tests, the demo and benchmarks (tiny_sd: the SD 1.5-shaped model and a synthetic image)."""

from faseg_rt.testing.tiny_sd import (PARITY_CASES, build_tiny_model, small_config, synthetic_image,
                                      write_clip_tokenizer, write_small_config,
                                      write_synthetic_images)

__all__ = ["PARITY_CASES", "build_tiny_model", "small_config", "synthetic_image",
           "write_clip_tokenizer", "write_small_config", "write_synthetic_images"]
