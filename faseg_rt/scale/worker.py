"""The Ray Data worker of `faseg-rt label`: one Segmenter per worker, batches of image bytes in,
one row per image out (faseg_rt.scale.label runs it)."""

from __future__ import annotations

import io
from pathlib import Path

from faseg_rt.errors import FASegError
from faseg_rt.frontend.input_files import image_key
from faseg_rt.io import output_name
from faseg_rt.retry import run_isolating
from faseg_rt.scale.manifest import frontend_record


class _SegmentWorker:
    """Ray Data stateful callable: loads one Segmenter per worker, labels batches of image bytes.

    A batch is {"bytes": [...], "path": [...]} (numpy format); the returned batch has one row per
    image: path, output (file name under OUT), status, error ("" when ok), frontend (JSON of the
    caption used, candidates and their sources, class scores and front-end ids; "" on error).
    Bad images and failures are rows, never exceptions, so one image cannot stop the job.

    caption / candidates: one value for every image, or a dict image stem -> value (from the
    --captions / --candidates files); an image missing from such a dict is an error row.
    """

    def __init__(self, model, out, classes, caption, threshold, backend="torch", engines=None,
                 device=None, dtype=None, batch_size=1, num_threads=None, candidates=None,
                 frontend=None, exif_transpose=False, config=None, batching="invariant"):
        from faseg_rt.hub import quiet_libraries
        from faseg_rt.segmenter import Segmenter
        from faseg_rt.threads import apply

        quiet_libraries()
        apply(num_threads)  # None: this actor's Ray CPUs within its affinity and quota (faseg_rt/threads.py)
        # dtype: a name ("float32", "fp16", ...) or None; from_pretrained parses and checks it
        self.seg = Segmenter.from_pretrained(model, backend=backend, device=device, dtype=dtype,
                                             engines=engines, config=config,
                                             batch_invariant=batching, **(frontend or {}))
        self.candidates = candidates
        self.out = Path(out)
        self.classes = list(classes)
        self.caption = caption
        self.threshold = threshold
        self.batch_size = batch_size
        self.exif_transpose = exif_transpose

    def _inputs(self, path: str):
        """(caption, candidates) of one image; KeyError names what a file lacks."""
        out = []
        for what, value in (("captions", self.caption), ("candidates", self.candidates)):
            if isinstance(value, dict):
                if image_key(path) not in value:
                    raise KeyError(f"the {what} file does not name {path}")
                value = value[image_key(path)]
            out.append(value)
        return tuple(out)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        from faseg_rt.images import load_image

        paths = [str(p) for p in batch["path"]]
        status = ["error"] * len(paths)
        errors = [""] * len(paths)
        front = [""] * len(paths)
        decoded = []  # (index, path, image, (caption, candidates))
        for i, data in enumerate(batch["bytes"]):
            buf = io.BytesIO(bytes(data))
            buf.name = paths[i]  # error messages name the file
            try:
                decoded.append((i, paths[i], load_image(buf, self.exif_transpose),
                                self._inputs(paths[i])))
            except FASegError as e:
                errors[i] = str(e)
            except KeyError as e:
                errors[i] = str(e.args[0])
        for i, err, record in self._segment(decoded):
            if err is None:
                status[i], front[i] = "ok", record
            else:
                errors[i] = err
        return {"path": np.array(paths, dtype=object),
                "output": np.array([output_name(p) for p in paths], dtype=object),
                "status": np.array(status, dtype=object),
                "error": np.array(errors, dtype=object),
                "frontend": np.array(front, dtype=object)}

    def _segment(self, decoded):
        """Segment and save -> [(index, error or None, frontend record)]; a failed batch follows
        faseg_rt.retry (each image alone once to find the culprit; out of memory: no rerun)."""
        if not decoded:
            return []
        results, _ = run_isolating(self._run, decoded)
        done = []
        for (i, path, _, _), res in zip(decoded, results):
            if isinstance(res, Exception):
                done.append((i, f"{type(res).__name__}: {res}", ""))
                continue
            name = output_name(path)
            try:
                res.save(self.out / name)
                done.append((i, None, frontend_record(res)))
            except Exception as e:
                done.append((i, f"cannot write {self.out / name}: {type(e).__name__}: {e}", ""))
        return done

    def _run(self, decoded):
        return self.seg.segment_batch([img for _, _, img, _ in decoded], self.classes,
                                      captions=[c for *_, (c, _) in decoded],
                                      batch_size=self.batch_size, threshold=self.threshold,
                                      candidates=[k for *_, (_, k) in decoded],
                                      return_scores=False)
