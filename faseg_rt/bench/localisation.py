"""The localisation study: how much training on the toy world makes cross-attention find the
named objects, and which training choice gets there soonest.

    python benchmarks/localisation.py --choice baseline --choice text-full --minutes 15
    python benchmarks/localisation.py --plot            # curves.png + the table, from the runs

Each choice changes one field of the baseline Recipe (faseg_rt/testing/toy_train.py).  A run
trains for --minutes of CPU time (the process's, so a choice's budget does not shrink when
the machine is shared; with --threads 1 it is the wall time of an idle core) and, every
--eval-every steps (and at step 0: the untrained
model, chance level), scores the model on a fixed validation split (toy_eval.evaluate: FA-Seg
mIoU with ground-truth candidates, and the attention ratio / pointing signal), appending one row
to OUT/<choice>/curve.jsonl.  The plot puts every curve against training minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from faseg_rt.bench.common import machine_info
from faseg_rt.testing.toy_train import Recipe
from faseg_rt.threads import apply as apply_threads

BASE = Recipe()
GROUNDED = BASE.changed(token_scale=30.0, grounding=1.0, grouping=1.0, prompts="dual")
FILL = GROUNDED.changed(grounding_form="fill")
#: name -> the recipe it trains (one field away from the baseline).
CHOICES = {
    "baseline": BASE,
    "lr-3e-3": BASE.changed(lr=3e-3),
    "lr-3e-4": BASE.changed(lr=3e-4),
    "batch-8": BASE.changed(batch=8),
    "text-embeddings": BASE.changed(text="embeddings"),
    "text-full": BASE.changed(text="full"),
    "vae-trained": BASE.changed(vae_steps=300),
    "width-2x": BASE.changed(width=2.0),
    "size-256": BASE.changed(size=256),
    "words": BASE.changed(caption_form="words"),
    "tokens-30": BASE.changed(token_scale=30.0),
    "named-colours": BASE.changed(colours="named"),
    "low-t": BASE.changed(timesteps="low"),
    # second round, one field away from tokens-30 (the first choice whose class tokens differ)
    "tokens-30+named-colours": BASE.changed(token_scale=30.0, colours="named"),
    "tokens-30+lr-3e-3": BASE.changed(token_scale=30.0, lr=3e-3),
    "mid-t": BASE.changed(timesteps="mid"),
    # third round: the noise loss plus grounding terms (toy_grounding.py), on FA-Seg's prompt forms
    "grounded": GROUNDED,
    "grounded-fill": FILL,
    # one field away from grounded-fill (the shipped recipe without its lr decay)
    "grounded-fill+low-t": FILL.changed(timesteps="low"),
    "grounded-fill+mid-t": FILL.changed(timesteps="mid"),
    "grounded-fill+vae-trained": FILL.changed(vae_steps=300),
    "grounded-fill+width-2x": FILL.changed(width=2.0),
    "grounded-fill+batch-8": FILL.changed(batch=8),
    "grounded-fill+caption-only": FILL.changed(prompts="caption"),
}


def run_choice(name: str, out: Path, *, minutes: float, eval_every: int, val: int, log=print) -> Path:
    """Train CHOICES[name] for `minutes`, scoring every `eval_every` steps; returns the curve file."""
    from faseg_rt.testing.toy_eval import evaluate
    from faseg_rt.testing.toy_train import Trainer

    recipe = CHOICES[name]
    work = out / name
    work.mkdir(parents=True, exist_ok=True)
    curve = work / "curve.jsonl"
    curve.unlink(missing_ok=True)
    t0 = time.perf_counter()
    trainer = Trainer(recipe, work)
    setup_s = time.perf_counter() - t0
    meta = {"choice": name, "recipe": recipe.to_dict(), "machine": machine_info("cpu"), "setup_s": setup_s,
            "vae_final_loss": (getattr(trainer, "vae_losses", None) or [None])[-1]}
    (work / "run.json").write_text(json.dumps(meta, indent=1))
    train_s, cpu_s, losses, terms = 0.0, 0.0, [], []
    while True:
        row = {"step": trainer.steps_done, "train_minutes": cpu_s / 60, "wall_minutes": train_s / 60,
               "loss": sum(losses) / len(losses) if losses else None}
        if terms:
            row["terms"] = {k: sum(x[k] for x in terms) / len(terms) for k in terms[0]}
        row.update(_score(trainer, work, val, evaluate))
        row["load"] = os.getloadavg()[0]
        with curve.open("a") as f:
            f.write(json.dumps(row) + "\n")
        log(f"[{name}] step {row['step']} {row['train_minutes']:.1f} min loss {row['loss']} "
            f"mIoU {row['miou']:.3f} (best {row['miou_best']:.3f}) ratio {row['ratio']}")
        if cpu_s >= minutes * 60:
            break
        losses, terms = [], []
        t, c = time.perf_counter(), time.process_time()
        for _ in range(eval_every):
            losses.append(trainer.step())
            terms.append(trainer.last_terms)
        train_s += time.perf_counter() - t
        cpu_s += time.process_time() - c
    trainer.model_dir(work / "model")
    # the load average at the start and now, beside the CPU, ISA and threads (bench/common.py)
    meta["machine"] = machine_info("cpu", load_before=meta["machine"]["load_after"])
    (work / "run.json").write_text(json.dumps(meta, indent=1))
    return curve


def _score(trainer, work: Path, val: int, evaluate) -> dict:
    from faseg_rt import Segmenter
    from faseg_rt.testing.toy_eval import toy_config

    d = trainer.model_dir(work / "checkpoint")
    seg = Segmenter.from_pretrained(d, device="cpu", dtype=torch.float32,
                                    config=toy_config(trainer.recipe.size))
    t = time.perf_counter()
    res = evaluate(seg, trainer.world, n=val)
    res["eval_s"] = time.perf_counter() - t
    return res


def read_curves(out: Path) -> dict[str, list[dict]]:
    curves = {}
    for f in sorted(out.glob("*/curve.jsonl")):
        rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        if rows:
            curves[f.parent.name] = rows
    return curves


def table(curves: dict[str, list[dict]]) -> str:
    """Markdown: per choice, the untrained and the last point, and the best mIoU seen."""
    lines = ["| choice | steps | train min | noise loss | mIoU @0.55 (untrained -> last) | best mIoU (thr) | "
             "attn ratio r=4 / 8 (last) | pointing r=8 (last) |", "|---|---|---|---|---|---|---|---|"]
    for name, rows in curves.items():
        first, last = rows[0], rows[-1]
        best = max(rows, key=lambda r: r["miou_best"])
        ratio = " / ".join(_ratio(last["ratio"].get(k, float("nan"))) for k in ("4", "8"))
        # the noise loss (a grounded recipe's total adds its grounding terms)
        noise = last.get("terms", {}).get("noise", last["loss"])
        loss = f"{noise:.3f}" if noise is not None else "-"
        lines.append(f"| {name} | {last['step']} | {last['train_minutes']:.1f} | {loss} | "
                     f"{first['miou']:.3f} -> {last['miou']:.3f} | {best['miou_best']:.3f} "
                     f"({best['best_threshold']}) | {ratio} | {last['pointing'].get('8', float('nan')):.2f} |")
    return "\n".join(lines)


#: the ratio plot's ceiling: grounded recipes reach thousands (no attention outside the object)
RATIO_CLIP = 4.0


def _ratio(v: float) -> str:
    """A ratio over 100 means the attention outside the object is all but zero: its digits
    say nothing more."""
    return f"{v:.2f}" if v < 100 else "> 100"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="localisation", description=__doc__.split("\n\n")[0])
    p.add_argument("--choice", action="append", choices=sorted(CHOICES),
                   help="a training choice to run (repeat); default: none (with --plot) or baseline")
    p.add_argument("--minutes", type=float, default=15.0, help="training CPU minutes per choice (default 15)")
    p.add_argument("--eval-every", type=int, default=100, help="steps between two scorings (default 100)")
    p.add_argument("--val", type=int, default=40, help="validation pictures per scoring (default 40)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (default: faseg_rt.threads' choice from the CPUs this process may use)")
    p.add_argument("--out", type=Path, default=Path("faseg-bench/localisation"), help="run directory")
    p.add_argument("--plot", type=Path, nargs="?", const=Path("curves.png"),
                   help="write the curves of every run in OUT to this PNG (in OUT) and print the table")
    a = p.parse_args(argv)
    apply_threads(a.threads or None)
    for name in a.choice or ([] if a.plot else ["baseline"]):
        run_choice(name, a.out, minutes=a.minutes, eval_every=a.eval_every, val=a.val)
    if a.plot:
        from faseg_rt.bench.plot import line_plot

        curves = read_curves(a.out)
        series = {n: [(r["train_minutes"], r["miou_best"]) for r in rows] for n, rows in curves.items()}
        line_plot(series, a.out / a.plot, title="toy world: FA-Seg mIoU (best threshold) vs training minutes",
                  xlabel="training CPU minutes (process time, all threads)", ylabel="mIoU")
        ratio = {n: [(r["train_minutes"], min(r["ratio"].get("8", 0.0), RATIO_CLIP)) for r in rows]
                 for n, rows in curves.items()}
        line_plot(ratio, a.out / a.plot.with_name(a.plot.stem + "-ratio.png"),
                  title=f"toy world: class attention inside / outside its object (latent 8, clipped at {RATIO_CLIP:g}) "
                        "vs training minutes",
                  xlabel="training CPU minutes (process time, all threads)", ylabel="ratio")
        print(table(curves))
    return 0
