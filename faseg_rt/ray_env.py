"""The settings of a Ray instance that `faseg-rt label` or `faseg-rt serve` starts on this machine.

A local Ray (no address and no RAY_ADDRESS, or "local") is for this process alone, so it should
listen on nothing but the loopback interface.  Ray decides that from the environment when it is
imported: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is its single-machine mode (what it runs as on macOS
and Windows), in which the GCS, raylet, workers, dashboard agent and metrics endpoints bind
127.0.0.1; RAY_AUTH_MODE=token gives the instance a token (created in ~/.ray if missing) that
every caller must hold, and spares Ray 2.60's warning that it turned token mode on itself.  A
variable already set wins, and once Ray is imported nothing here changes it (`loopback_only`
says what the imported Ray does).  Clusters joined by address keep their own settings.
"""

from __future__ import annotations

import logging
import os
import sys

LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}


def starts_local_ray(address: str | None) -> bool:
    """True when `address` means a fresh Ray on this machine rather than a cluster to join (no
    address joins RAY_ADDRESS's cluster when that is set)."""
    return address == "local" or (address is None and not os.environ.get("RAY_ADDRESS"))


def prefer_local_ray_env(address: str | None) -> bool:
    """Set LOCAL_RAY_ENV's variables the user left unset, when `address` starts a local Ray and
    Ray is not imported yet; True when they were set here (False: a cluster, or too late)."""
    if "ray" in sys.modules or not starts_local_ray(address):
        return False
    for k, v in LOCAL_RAY_ENV.items():
        os.environ.setdefault(k, v)
    return True


def loopback_only(ray) -> bool:
    """True when the imported Ray runs in its single-machine mode (every port on loopback)."""
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    return not getattr(constants, "ENABLE_RAY_CLUSTER", True)


def init_ray(ray, address: str | None, command: str | None = None) -> bool | None:
    """Start a local Ray (no dashboard, quiet) or join the cluster at `address`.

    Returns None when Ray was already initialised (nothing done), True when a local Ray was
    started, False when a cluster was joined.  A local Ray started after Ray was imported
    without LOCAL_RAY_ENV is said in a warning naming `command` (a command's process is its own,
    so it sets the variables: None for a library call, whose process is the caller's and whose
    environment is left alone).  A failure is one FASegError naming where Ray was sought."""
    from faseg_rt.errors import FASegError

    if ray.is_initialized():
        return None
    local = starts_local_ray(address)
    if local and command and not loopback_only(ray):
        logging.getLogger("faseg_rt.ray").warning(
            "Ray was imported before %s could set %s: the local Ray's ports listen on every "
            "interface", command, ", ".join(f"{k}={v}" for k, v in LOCAL_RAY_ENV.items()))
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, logging_level="WARNING",
                 **(dict(include_dashboard=False) if local else {}))
    except Exception as e:  # ConnectionError, ValueError, RuntimeError from ray.init
        where = "a local Ray instance" if local else f"the Ray cluster at {address}"
        raise FASegError(f"cannot start or reach {where}: {type(e).__name__}: {e}") from None
    return local
