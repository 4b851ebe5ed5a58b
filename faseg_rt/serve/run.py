"""`faseg-rt serve`: start or join Ray, deploy the application, block until SIGINT / SIGTERM.

On a signal (or any error) the application is deleted, Serve is shut down when this process
started it, and a Ray instance this process started is shut down with every process it
launched (raylet, GCS, Serve's controller, proxy and replicas), so nothing is left running.

A signal to the whole process group (Ctrl-C in a terminal, systemd's KillMode=control-group)
also reaches the local Ray's GCS and raylet, which die at once; a graceful shutdown would then
wait ~60 s on the gone GCS (and Ray's core worker aborts the process).  So when the head this
process started is gone, the stop is immediate: the node's remaining processes and this
process's own descendants are killed and the process exits 0 (`_hard_stop`).

A local Ray started here listens on 127.0.0.1: no dashboard, and Ray's single-machine mode
(`faseg_rt.ray_env.LOCAL_RAY_ENV`, what Ray runs as on macOS and Windows), in which the GCS, raylet, workers,
dashboard agent and the Prometheus metrics endpoints bind the loopback interface; the HTTP proxy
listens where --host says.  One port Ray Serve binds on every interface whatever the mode: each
replica's inter-deployment gRPC server, which with Ray's token authentication (RAY_AUTH_MODE=
token, set here too) answers only callers holding the cluster's token.  Joining a cluster
(--address) leaves its settings alone.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

from faseg_rt.errors import FASegError
from faseg_rt.ray_env import init_ray, prefer_local_ray_env, starts_local_ray

APP_NAME = "faseg"
#: One line for users without Ray Serve (the CLI prints it and exits 2).
SERVE_MISSING = "faseg-rt serve needs Ray Serve: pip install 'faseg_rt[serve]'"


class ServeUnavailableError(FASegError):
    """Ray Serve (the optional `serve` extra) is not installed."""


def import_serve(local: bool = False):
    """(ray, ray.serve), or one clear error saying how to install them.  local: a local Ray
    will be started, so LOCAL_RAY_ENV is set first, when Ray is not imported yet (it reads it
    on import; start_ray warns when it was too late)."""
    if local:
        prefer_local_ray_env("local")
    try:
        import ray
        import ray.serve
        import fastapi  # noqa: F401
        import multipart  # noqa: F401  (starlette's form parser)
    except ImportError:
        raise ServeUnavailableError(SERVE_MISSING) from None
    return ray, ray.serve


def start_ray(ray, address: str | None) -> bool:
    """Join the cluster at `address` or start a local Ray; True when started here."""
    return init_ray(ray, address, "faseg-rt serve") is True


def replica_resources(ray, replicas: int, device: str | None) -> dict:
    """num_cpus / num_gpus / num_threads of one replica, from the alive nodes' own resources
    (a replica runs on one node, so it never asks for more than one node has): a GPU each when
    the nodes hold `replicas` GPUs and device is not cpu, else the most CPUs per replica such
    that `replicas` of them fit on the nodes."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    gpus = sum(int(n.get("GPU", 0)) for n in nodes)
    if gpus >= replicas and not (device and str(device).startswith("cpu")):
        return {"num_cpus": 1.0, "num_gpus": 1.0}
    cpus = [int(n.get("CPU", 0)) for n in nodes] or [1]
    per = next((p for p in range(max(cpus), 0, -1) if sum(c // p for c in cpus) >= replicas), 1)
    return {"num_cpus": float(per), "num_gpus": 0.0, "num_threads": per}


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def wait_loaded(handle, timeout_s: float, replicas: int = 1) -> None:
    """Block until every one of `replicas` replicas has its model (asked until each has
    answered loaded; FASegError with the error as soon as one failed, or at the deadline)."""
    deadline = time.monotonic() + timeout_s
    loaded: set[str] = set()
    while True:
        state = handle.load_state.remote().result(timeout_s=max(1.0, deadline - time.monotonic()))
        if state["error"]:
            raise FASegError(f"the model failed to load: {state['error']}")
        if state["loaded"]:
            loaded.add(state["replica"])
            if len(loaded) >= replicas:
                return
        if time.monotonic() > deadline:
            raise FASegError(f"{len(loaded)} of {replicas} replicas loaded the model within "
                             f"{timeout_s:.0f} s")
        time.sleep(0.5 if not state["loaded"] else 0.05)


def serve_forever(model, *, host="127.0.0.1", port=8000, address=None, load_timeout_s=1800.0,
                  out=sys.stderr, **settings) -> int:
    """Deploy build_app(model, **settings) behind http://host:port and block until SIGINT /
    SIGTERM; returns 0 after a clean shutdown.  Replica resources default from the cluster
    (replica_resources) where settings do not give them."""
    ray, serve = import_serve(local=starts_local_ray(address))
    from faseg_rt.serve.app import build_app
    from faseg_rt.serve.settings import ServeSettings

    ServeSettings.make(model, **settings)  # bad settings fail before Ray starts
    old = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    started = deployed = False
    try:
        started = start_ray(ray, address)
        for s in old:  # ray.init installs its own SIGTERM handler (a stack dump, then death)
            signal.signal(s, _raise_interrupt)
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        for k, v in replica_resources(ray, settings.get("replicas") or 1,
                                      settings.get("device")).items():
            if settings.get(k) is None:
                settings[k] = v
        app = build_app(model, **settings)
        serve.start(http_options={"host": host, "port": int(port)})
        handle = serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        deployed = True
        print(f"faseg-rt serve: loading {model} ...", file=out, flush=True)
        wait_loaded(handle, load_timeout_s, settings.get("replicas") or 1)
        print(f"faseg-rt serve: ready on http://{host}:{port}/ (Ctrl-C or SIGTERM to stop)",
              file=out, flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("faseg-rt serve: stopping", file=out, flush=True)
        return 0
    finally:
        for s in old:  # a second signal during the shutdown must not cut it short
            signal.signal(s, signal.SIG_IGN)
        _shutdown(ray, serve, started, deployed)
        for s, h in old.items():
            signal.signal(s, h)


#: Seconds the graceful stop (delete the application, stop Serve) may take before the stop is
#: made immediate; it also ends as soon as the local head is seen gone.
GRACEFUL_STOP_S = 20.0


def _head_lost(ray) -> bool:
    """True when the GCS or raylet of the local Ray this process started has exited (a signal
    to the process group reached them)."""
    node = getattr(ray._private.worker, "_global_node", None)
    if node is None:
        return False
    head = [p.process for kind in ("gcs_server", "raylet") for p in node.all_processes.get(kind, [])]
    return any(p.poll() is not None for p in head)


def _hard_stop(ray, tree: list[int]) -> None:
    """The local head is gone (or the graceful stop overran): kill what is left of the node and
    `tree` (this process's descendants, recorded when the stop began: Ray's workers among
    them), then exit 0 at once (Ray's own shutdown would wait on the gone GCS)."""
    node = ray._private.worker._global_node
    try:
        node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)
    except Exception as e:  # already gone: the processes below are still killed
        print(f"faseg-rt serve: while stopping Ray: {type(e).__name__}: {e}", file=sys.stderr)
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    print("faseg-rt serve: stopped at once (Ray's head was stopping too)", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(0)


def _children(root: int) -> list[int]:
    """Every live process below root, from /proc (Linux; [] elsewhere)."""
    below: dict[int, list[int]] = {}
    for d in os.listdir("/proc") if os.path.isdir("/proc") else []:
        try:
            with open(f"/proc/{d}/stat") as f:
                below.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(d))
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [], list(below.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(below.get(pid, []))
    return out


def _graceful(serve, started: bool, deployed: bool) -> None:
    try:
        if deployed:
            serve.delete(APP_NAME)
    except Exception as e:  # the cluster may already be gone; Ray's own shutdown follows
        print(f"faseg-rt serve: while deleting the application: {type(e).__name__}: {e}",
              file=sys.stderr)
    if started:
        try:  # stops this driver's Serve client threads too: else they wait 60 s for the gone GCS
            serve.shutdown()
        except Exception as e:
            print(f"faseg-rt serve: while shutting Serve down: {type(e).__name__}: {e}", file=sys.stderr)


def _shutdown(ray, serve, started: bool, deployed: bool) -> None:
    """Delete the application (its replicas finish what they hold), then stop the Ray this
    process started (Serve's controller and proxy go with it).  With a local Ray, at once
    (_hard_stop) when its head goes away meanwhile or this takes over GRACEFUL_STOP_S."""
    if not started:
        return _graceful(serve, started, deployed)
    tree = _children(os.getpid())
    worker = threading.Thread(target=_graceful, args=(serve, started, deployed), daemon=True)
    worker.start()
    deadline = time.monotonic() + GRACEFUL_STOP_S
    while worker.is_alive() and time.monotonic() < deadline and not _head_lost(ray):
        worker.join(0.1)
    if worker.is_alive() or _head_lost(ray):
        _hard_stop(ray, tree)
    ray.shutdown()
