"""Label many images on a Ray cluster with Ray Data: one Segmenter per worker, resumable.

    from faseg_rt.scale.label import label
    report = label("photos/", ["cat", "dog"], "masks/", model="XCLIU/2_rectified_flow_from_sd_1_5",
                   ray_address="auto", num_workers=8, batch_size=4)

How it runs (Ray Data, no scheduler of our own):
- `ray.data.read_binary_files(paths, include_paths=True)` reads the files (local paths or URIs
  such as s3://...) as bytes; decoding happens in the worker, so a corrupt image becomes one error
  row instead of failing the read.
- `ds.map_batches(_SegmentWorker, compute=ActorPoolStrategy(size=num_workers), ...)`: a stateful
  callable class, so each worker loads the model once and keeps it; one GPU per worker when the
  cluster has GPUs, otherwise the cluster's CPUs split between the workers.
- Each worker writes its masks itself (OUT/<stem>.png, palette PNG, atomically: the same
  `SegmentationResult.save` and naming as `faseg-rt segment`, so the bytes are identical) and
  returns one row per image: input, output, status ("ok" / "error"), error.
- The driver appends each returned row to OUT/manifest.jsonl (see `Manifest` for why appending
  is safe) and a rerun skips every input whose latest row is "ok" for the same job settings and
  whose mask file exists.

A local Ray (no address) listens on loopback only when faseg_rt.ray_env.prefer_local_ray_env()
ran before Ray was imported: `faseg-rt label` does; a library call leaves the environment alone.

Read tasks ask for no CPU (`num_cpus=0`): they only move bytes, and if the worker actors held
every CPU a read task needing one could never be scheduled and the job would stall.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from faseg_rt import rules
from faseg_rt.errors import FASegError, InvalidInputError
from faseg_rt.io import check_collisions, output_name, remove_stale_temps
from faseg_rt.ray_env import init_ray
from faseg_rt.scale.inputs import is_uri, path_key, resolve_inputs
from faseg_rt.scale.manifest import MANIFEST_NAME, Manifest, check_settings, is_done, job_settings, manifest_fields
from faseg_rt.scale.worker import _SegmentWorker

#: One line for users without Ray (the CLI prints it and exits 2).
RAY_MISSING = "faseg-rt label needs Ray: pip install 'faseg_rt[ray]'"


class RayUnavailableError(FASegError):
    """Ray (the optional `ray` extra) is not installed."""


def _concrete_dtype(dtype, device, gpus: bool):
    from faseg_rt.devices import resolve_auto  # here: devices imports torch, too slow for a usage error
    return resolve_auto(dtype, device, gpus=gpus)  # "auto" resolved once, by the driver


def import_ray():
    """`import ray` and Ray Data, or one clear error saying how to install them."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayUnavailableError(RAY_MISSING) from None
    return ray


@dataclass(frozen=True)
class LabelReport:
    """What one `label` run did: counts, where the manifest is, and how long it took."""

    ok: int
    failed: int
    skipped: int
    manifest: Path
    out: Path
    seconds: float
    first_error: str | None = None  # the error of this run's first failed image, if any

    @property
    def total(self) -> int:
        return self.ok + self.failed + self.skipped


# ---------------------------------------------------------------------------------- driver
#: Ray's own fault tolerance for the worker actors, stated here although these are Ray Data's
#: defaults for actor pools, because resuming after a lost node rests on them (docs/ray.md):
#: - max_restarts=-1: an actor lost with its node (preemption, OOM kill) is recreated on any node
#:   with room, as often as nodes are lost (a long job on spot nodes may lose many).
#: - max_task_retries=-1: the batches it held are resubmitted until a live actor runs them.  Not
#:   a small bound: until Ray declares a killed node dead (its health check, ~30 s by default)
#:   every submission to its actor fails as "temporarily unavailable" and counts as one retry
#:   (a dozen were seen in one node loss here), so a bound of 3 would fail the job on the very
#:   fault it is meant to survive.
#: Application errors are not retried (Ray Data's actor_task_retry_on_errors stays False): the
#: worker turns every exception of an image into an error row, and a retry would fail the same
#: way.  Read tasks keep Ray's default of 3 retries when their node is lost.
RETRIES = {"max_restarts": -1, "max_task_retries": -1}


def retry_args(ray_version: str) -> dict:
    """RETRIES for map_batches where Ray needs them; {} from Ray 2.60, whose actor pool applies
    exactly these when none are given and warns that passing them (`ray_remote_args`) is
    deprecated (a warning every `faseg-rt label` run printed)."""
    major, minor = (int(x) for x in ray_version.split(".")[:2])
    return {} if (major, minor) >= (2, 60) else dict(RETRIES)


def _plan_resources(ray, num_workers, device) -> tuple[int, float, float]:
    """(workers, CPUs per worker, GPUs per worker) from the cluster's resources.

    A worker runs on one node, so it never asks for more CPUs than the largest alive node has:
    two 1-CPU nodes hold 2 CPUs in all, yet a single worker asking for 2 could be placed nowhere
    and the job would wait forever (seen with `ray start` nodes before this check).
    """
    res = ray.cluster_resources()
    gpus, cpus = float(res.get("GPU", 0)), float(res.get("CPU", 1))
    use_gpu = gpus >= 1 and not (device and str(device).startswith("cpu"))
    if num_workers is None:
        num_workers = int(gpus) if use_gpu else 1
    if use_gpu:
        if num_workers > gpus:
            raise InvalidInputError(f"num_workers={num_workers} asks for more GPUs than the cluster "
                                    f"has ({int(gpus)}); one worker runs per GPU")
        return num_workers, 1.0, 1.0
    node_cpus = [float(n.get("Resources", {}).get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    largest = max(node_cpus, default=cpus) or cpus
    # CPU workers split the cluster's CPUs (whole CPUs when there are enough), at most one node's
    per = max(1.0, float(int(cpus // num_workers))) if cpus >= num_workers else cpus / num_workers
    return num_workers, min(per, largest), 0.0


def _check_settings(classes, threshold, batch_size, num_workers, dtype, model, threads=None,
                    batching="invariant"):
    """The settings checked by the shared rules once in the driver, not in every worker."""
    classes = list(rules.normalize_classes(classes))
    if threshold is not None:
        threshold = rules.threshold(threshold)
    batch_size = rules.batch_size(batch_size)
    if num_workers is not None:
        num_workers = rules.positive_int(num_workers, "num_workers")
    if threads is not None:
        threads = rules.threads(threads)
    if dtype is not None:  # workers get the name: a torch.dtype does not travel in the job settings
        dtype = str(rules.dtype(dtype)).removeprefix("torch.")
    if isinstance(model, (str, os.PathLike)) and Path(model).exists():
        from faseg_rt.model import check_model_dir

        check_model_dir(model)  # a bad local model fails here once, not in every worker
        model = str(Path(model).resolve())
    batching = "invariant" if rules.batching(batching) else "shared"
    return classes, threshold, batch_size, num_workers, dtype, model, threads, batching


def _digest(value) -> str:
    """A per-image mapping (or a lexicon) as it goes into every manifest row: a short hash."""
    text = json.dumps(value, sort_keys=True, default=list)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _job_settings(classes, caption, threshold, model, candidates, frontend, exif_transpose,
                  config=None) -> dict:
    """The settings a finished row must match to be skipped; per-image files by their digest."""
    settings = job_settings(classes, _digest(caption) if isinstance(caption, dict) else caption,
                            threshold, model)
    if candidates is not None or caption == "auto":  # a row made with other front-end settings is not done
        settings["candidates"] = _digest(candidates) if isinstance(candidates, dict) else candidates
        settings.update({k: (_digest(v) if isinstance(v, dict) else
                             str(v) if isinstance(v, os.PathLike) else v)
                         for k, v in used_frontend(caption, candidates, frontend).items()})
    if exif_transpose:
        settings["exif_transpose"] = True
    if config is not None:  # a mask made with other constants is not done
        settings["config"] = config.to_dict()
    return settings


def used_frontend(caption, candidates, frontend: dict | None) -> dict:
    """The front-end settings this job uses, of Segmenter.from_pretrained's: the captioner where
    a caption is made (caption "auto", or a caption-using mode without a caption), the
    recogniser and its selection where a mode uses it, the lexicon where captions name
    candidates.  Captions and candidates from files use neither model, so a row names none."""
    from faseg_rt.frontend.candidates import uses_caption, uses_recognizer

    mode = candidates if isinstance(candidates, str) else None
    used = {"captioner": caption == "auto" or (caption is None and uses_caption(mode)),
            "recognizer": uses_recognizer(mode), "candidate_threshold": uses_recognizer(mode),
            "max_candidates": uses_recognizer(mode), "lexicon": uses_caption(mode)}
    return {k: v for k, v in (frontend or {}).items() if used.get(k, True)}


def _per_image_inputs(caption, candidates, items, classes):
    """caption / candidates as the workers take them: one value, or a dict image stem -> value.

    A mapping (a --captions / --candidates file) is checked against the listed inputs up front:
    every image named, candidates only of `classes` (faseg_rt.frontend.input_files); with a
    Dataset input the workers report an image it lacks as an error row."""
    from faseg_rt.frontend.input_files import candidates_for, captions_for, image_key

    if isinstance(caption, dict):
        source = getattr(caption, "source", "the caption mapping")
        raw = {image_key(k): v for k, v in caption.items()}
        if items is not None:
            raw = dict(zip(map(image_key, items), captions_for(raw, items, source)))
        caption = raw
    if isinstance(candidates, dict):
        source = getattr(candidates, "source", "the candidates mapping")
        raw = {image_key(k): v for k, v in candidates.items()}
        keys = items if items is not None else list(raw)
        candidates = {image_key(k): list(v)
                      for k, v in zip(keys, candidates_for(raw, keys, classes, source))}
    return caption, candidates


@dataclass
class _Tally:
    """Running counts of one run (LabelReport's fields)."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    first_error: str | None = None

    def add(self, status: str, error: str | None) -> None:
        if status == "ok":
            self.ok += 1
        else:
            self.failed += 1
            self.first_error = self.first_error or error


def _todo_items(items, manifest, settings, out, overwrite, tally) -> list[str]:
    """The listed inputs still to label: done ones skipped, missing local files recorded as
    error rows here (they would fail the whole Ray read)."""
    todo = []
    for item in items:
        if not overwrite and is_done(manifest.rows.get(item), settings, out):
            tally.skipped += 1
        elif not is_uri(item) and not os.path.isfile(item):
            error = f"image {item} does not exist"
            manifest.append(dict(settings, input=item, output=output_name(item),
                                 status="error", error=error))
            tally.add("error", error)
        else:
            todo.append(item)
    return todo


def _dataset_todo(ds, manifest, settings, out, overwrite):
    """A user's ray.data.Dataset less the rows already done (it must have bytes and path)."""
    missing = {"bytes", "path"} - set(ds.columns())
    if missing:
        raise InvalidInputError(
            f"the dataset lacks column(s) {sorted(missing)}; make it with "
            "ray.data.read_binary_files(paths, include_paths=True)")
    done = set() if overwrite else {path_key(k) for k, r in manifest.rows.items()
                                    if is_done(r, settings, out)}
    return ds.filter(lambda row: row["path"] not in done) if done else ds


def _quiet_ray(ray, progress: bool, verbose: bool) -> None:
    """Ray Data's progress bars when `progress`; its INFO lines (an execution plan per dataset,
    and, when stderr is no terminal, the progress as a block of log lines every 10 s) only when
    `verbose`; with neither, not its warning that the bars are off (as asked) either."""
    import logging

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(progress)
    if not verbose:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    if not progress and not verbose:
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def _collect(ds, manifest, settings, by_key, tally) -> None:
    """Append each returned row to the manifest; a user Dataset's stem collisions show up here."""
    outputs_seen: dict[str, str] = {}
    try:
        for row in ds.iter_rows():
            path = str(row["path"])
            item = by_key.get(path, path) if by_key is not None else path
            status, error = str(row["status"]), str(row["error"]) or None
            name = str(row["output"])
            if by_key is None:  # a user Dataset: collisions only show up now
                if name in outputs_seen and outputs_seen[name] != item:
                    status, error = "error", (f"{item} and {outputs_seen[name]} both write {name}; "
                                              "the later one overwrote it: use distinct file stems")
                outputs_seen[name] = item
            manifest.append(dict(settings, input=item, output=name, status=status, error=error,
                                 **manifest_fields(row)))
            tally.add(status, f"{item}: {error}")
    except FASegError:
        raise
    except Exception as e:
        raise FASegError(
            f"the Ray job failed after {tally.ok + tally.failed} image(s) ({type(e).__name__}: "
            f"{str(e).strip().splitlines()[-1] if str(e).strip() else ''}); finished rows are in "
            f"{manifest.path}: rerun the same command to resume") from None


def _close(manifest) -> None:
    manifest.close()
    try:  # one row per input: a retried error row does not stand beside its new row
        manifest.compact()
    except OSError:  # a full disk: the appended rows stay valid, the next run compacts
        pass


def label(inputs, classes, out, *, model, backend: str = "torch", engines=None, caption=None,
          threshold=None, num_workers: int | None = None, batch_size: int = 1, ray_address=None,
          device=None, dtype=None, overwrite: bool = False, progress: bool = False,
          candidates=None, frontend: dict | None = None, exif_transpose: bool = False,
          config=None, verbose: bool = False, threads: int | None = None, batching="invariant") -> LabelReport:
    """Label images with FA-Seg on Ray; writes OUT/<stem>.png masks and OUT/manifest.jsonl.

    inputs: a directory, a glob, a text file listing paths/URIs, an image, a list of paths/URIs,
        or a ray.data.Dataset with "bytes" and "path" columns (read_binary_files(include_paths=True)).
    classes: class names (as for Segmenter); caption ("auto" too), threshold, candidates (None,
        a mode or a list of names): as for Segmenter; caption and candidates may also be dicts
        image file name or stem -> caption / candidate classes (a string or a list; the
        --captions / --candidates files), checked against the inputs before anything runs;
        frontend: Segmenter.from_pretrained's front-end settings (captioner, recognizer,
        candidate_threshold, max_candidates, lexicon).  Each finished row records the caption
        used, the candidates and their sources and every class's score under "frontend".
    num_workers: model replicas (default: one per GPU, else 1); batch_size: images per worker call;
        batching: "invariant" (each image alone through the networks: every mask is its single
        call's) or "shared" (batch_size images per network pass); threads: torch threads per worker.
    ray_address: None (Ray's default: RAY_ADDRESS or a new local instance), "local" (always a new
        local instance), "auto" (the running cluster) or "ray://host:port" / "host:port".
    overwrite: label everything again, ignoring the manifest; without it, finished masks made
        with other settings that this run would replace are refused (SettingsConflictError).
    exif_transpose: apply EXIF orientation first (as for Segmenter); config: a FASegConfig for all
        workers (None: the published one), in the rows; progress / verbose: Ray Data's bars / INFO.
    Returns a LabelReport (ok / failed / skipped counts); a bad image is a failed row, not an error.
    """
    ray = import_ray()
    classes, threshold, batch_size, num_workers, dtype, model, threads, batching = _check_settings(
        classes, threshold, batch_size, num_workers, dtype, model, threads, batching)
    out = Path(out)
    start = time.perf_counter()
    is_dataset = isinstance(inputs, ray.data.Dataset)
    items = None if is_dataset else resolve_inputs(inputs)
    outputs = None if items is None else check_collisions(items)  # the masks this run writes
    caption, candidates = _per_image_inputs(caption, candidates, items, classes)
    settings = _job_settings(classes, caption, threshold, model, candidates, frontend, exif_transpose,
                             config)
    if not overwrite:  # masks made with other settings are never replaced silently
        check_settings(out, settings, outputs)
    out.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out / MANIFEST_NAME).load()
    manifest.compact()
    tally, started = _Tally(), False
    try:
        by_key = None
        if is_dataset:
            ds = _dataset_todo(inputs, manifest, settings, out, overwrite)
        else:
            todo = _todo_items(items, manifest, settings, out, overwrite, tally)
            if not todo:
                return LabelReport(tally.ok, tally.failed, tally.skipped, manifest.path, out,
                                   time.perf_counter() - start, tally.first_error)
            by_key = {path_key(item): item for item in todo}
            # temporaries of masks a killed worker was writing (they are redone now)
            remove_stale_temps(out, {output_name(item) for item in todo})
        started = init_ray(ray, ray_address) is not None  # ours to shut down
        _quiet_ray(ray, progress, verbose)
        if not is_dataset:
            ds = ray.data.read_binary_files(todo, include_paths=True, num_cpus=0)
        workers, cpus, gpus = _plan_resources(ray, num_workers, device)
        ds = ds.map_batches(
            _SegmentWorker,
            fn_constructor_kwargs=dict(model=str(model), out=str(out.resolve()), classes=classes,
                                       caption=caption, threshold=threshold, backend=backend,
                                       engines=None if engines is None else str(engines),
                                       device=device, batch_size=batch_size, num_threads=threads,
                                       dtype=_concrete_dtype(dtype, device, gpus > 0), batching=batching,
                                       candidates=candidates, frontend=frontend,
                                       exif_transpose=exif_transpose, config=config),
            batch_size=batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus, num_gpus=gpus,
            **retry_args(ray.__version__))
        _collect(ds, manifest, settings, by_key, tally)
    finally:
        _close(manifest)
        if started:
            ray.shutdown()
    return LabelReport(tally.ok, tally.failed, tally.skipped, manifest.path, out,
                       time.perf_counter() - start, tally.first_error)
