"""The trained toy-world model shipped with the package: where it lies, its content check, and
the command that remakes it.

A tiny SD 1.5-shaped model (the test layout: UNet 32/32/64/64, attention at latent 16/8/4 and
the mid block) trained on the toy world's scenes (faseg_rt/eval/datasets/toy_world.py) with the recipe
RECIPE for STEPS steps (toy_train.py; docs/eval.md, "Accuracy on a trained model").  Unlike the
random test model, its attention finds the named objects, so FA-Seg's masks can be scored
against exact ground truth, and the demo shows masks that mean something.  Weights are stored
in float16 (about 8 MB); the runtime loads them at the dtype it is asked for.

    python -m faseg_rt.testing.toy_model --out DIR      # remake (see MANIFEST.json for its time)
    faseg-rt segment pic.png --classes cat,dog --model ASSET     # reads ASSET/faseg_config.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from faseg_rt.engines.file_hash import hash_bytes
from faseg_rt.errors import FASegError
from faseg_rt.model import CONFIG_FILE
from faseg_rt.testing.tiny_sd import write_small_config
from faseg_rt.testing.toy_train import Recipe

#: the shipped model's folder (package data)
ASSET = Path(__file__).parent / "assets" / "toy-world"
MANIFEST = "MANIFEST.json"
#: the recipe and length the shipped weights were trained with (docs/eval.md: the study)
STEPS = 1500
RECIPE = Recipe(token_scale=30.0, grounding=1.0, grouping=1.0, grounding_form="fill", prompts="dual",
                timesteps="low", world="scenes", lr_decay_steps=STEPS)
REMAKE = "python -m faseg_rt.testing.toy_model --out DIR"


def toy_model_dir(path: str | Path | None = None) -> Path:
    """The shipped (or remade) toy model's directory, after checking every file against the
    SHA-256 its MANIFEST.json records; a missing or changed file is a clear error."""
    d = Path(path) if path is not None else ASSET
    man = d / MANIFEST
    if not man.is_file():
        raise FASegError(f"no toy-world model in {d} ({MANIFEST} missing); remake it with: {REMAKE}")
    files = json.loads(man.read_text())["files"]
    for rel, digest in files.items():
        f = d / rel
        if not f.is_file() or hash_bytes(f) != digest:
            raise FASegError(f"toy-world model in {d}: {rel} is missing or not the file its manifest "
                             f"names; reinstall the package or remake it with: {REMAKE}")
    return d


def remake(out: str | Path, *, steps: int = STEPS, recipe: Recipe = RECIPE, log=print) -> Path:
    """Train RECIPE for `steps` steps (deterministic given the recipe's seed) and write the model
    directory to `out` with float16 weights, a manifest of file hashes and a model card."""
    import tempfile

    from faseg_rt.testing.toy_train import Trainer

    out = Path(out)
    with tempfile.TemporaryDirectory() as work:
        t0, c0 = time.perf_counter(), time.process_time()
        trainer = Trainer(recipe, work)
        for i in range(steps):
            trainer.step()
            if i % 200 == 0 or i == steps - 1:
                log(f"step {i + 1}/{steps}: {trainer.last_terms}")
        trainer.model_dir(out)
        cpu_min, wall_min = (time.process_time() - c0) / 60, (time.perf_counter() - t0) / 60
    _to_float16(out)
    write_small_config(out / CONFIG_FILE, recipe.size // 8)   # the constants at its size: latent 16
    write_manifest(out, {"recipe": recipe.to_dict(), "steps": steps, "cpu_minutes": round(cpu_min, 1),
                         "wall_minutes": round(wall_min, 1), "command": REMAKE})
    return out


def write_manifest(out: Path, info: dict) -> None:
    """MANIFEST.json: `info` and the SHA-256 of every file of `out` but the manifest and the
    model card (README.md)."""
    files = {str(f.relative_to(out)): hash_bytes(f) for f in sorted(out.rglob("*"))
             if f.is_file() and f.name not in (MANIFEST, "README.md")}
    (out / MANIFEST).write_text(json.dumps({**info, "files": files}, indent=1) + "\n")


def untrained_model(out: str | Path, recipe: Recipe = RECIPE) -> Path:
    """The same layout and initialisation as the shipped model, before any training step (the
    chance level of the accuracy table), written to `out` (reused when there)."""
    import tempfile

    from faseg_rt.testing.toy_train import Trainer

    out = Path(out)
    if not (out / "model_index.json").is_file():
        with tempfile.TemporaryDirectory() as work:
            Trainer(recipe, work).model_dir(out)
    return out


def _to_float16(d: Path) -> None:
    """Rewrite every safetensors file of `d` with its float32 tensors as float16."""
    import torch
    from safetensors.torch import load_file, save_file

    for f in d.rglob("*.safetensors"):
        tensors = {k: (v.half() if v.dtype == torch.float32 else v) for k, v in load_file(f).items()}
        save_file(tensors, f, metadata={"format": "pt"})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m faseg_rt.testing.toy_model",
                                description="Remake the trained toy-world model (docs/eval.md).")
    p.add_argument("--out", required=True, type=Path, help="model directory to write")
    p.add_argument("--steps", type=int, default=STEPS, help=f"training steps (default {STEPS})")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: the CPUs this process may use)")
    a = p.parse_args(argv)
    from faseg_rt.threads import apply

    apply(a.threads or None)
    remake(a.out, steps=a.steps)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
