"""A real multi-node Ray cluster on this machine, for the fault and service tests and the Ray
scaling benchmark (benchmarks/ray_scaling.py), and the commands they run in fresh processes.

`RayCluster` starts a head and worker nodes with `ray start --block` (each its own process group,
its own temp dir, ports picked free on 127.0.0.1, one CPU each) and stops them by the process ids
it recorded: every process of a node is a descendant of its `ray start --block` process (Ray
starts them with fate sharing), so killing that tree is a node dying (SIGKILL) or being shut
down (SIGTERM, then SIGKILL for anything left).  A watchdog per node kills the node's process
group if the test process dies without stopping it (a CI timeout), so no Ray process outlives the
run.  Nothing here touches Ray processes it did not start.

Authentication: Ray 2.60 turns token authentication on by itself when ~/.ray/auth_token exists
(which any local `ray.init()` creates), and a node that disagrees with the head cannot join; so
every process here gets RAY_AUTH_MODE=token and a fresh RAY_AUTH_TOKEN of its own, independent
of the user's home directory (and the cluster, listening on every interface, is not open).

Addresses: the head is given as 127.0.0.1:PORT and every node gets --node-ip-address 127.0.0.1,
but Ray 2.60 replaces a loopback node address by the host's own address
(`ray._private.services.resolve_ip_for_localhost`) and its gRPC servers listen on every
interface; no option changes that.  All traffic stays on this host.

Commands run the tiny model at a small config through their own `--config FILE` option
(`faseg_rt.testing.write_small_config`), in the driver and in every Ray worker alike.  Every
process started here imports the faseg_rt this process imported: the directory that holds it
goes first on PYTHONPATH, so a checkout under test is what runs, installed or not.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The directory holding this faseg_rt package (the tree under test): PYTHONPATH of every node.
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0


#: One token for every cluster and driver this test process starts (see the module docstring).
AUTH_TOKEN = secrets.token_hex(32)


def small_env(**extra) -> dict:
    """Environment for a subprocess (a node, a driver) that imports the tree under test."""
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=AUTH_TOKEN)
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # single-machine mode (ray_env.py) has no worker nodes
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] +
                                        ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update({"TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error",
                "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}, **extra)
    return env


def cli_command(*args: str, threads: int = 1) -> list[str]:
    """`faseg-rt ARGS` in a fresh interpreter with `threads` torch threads (byte-identical masks
    need the reference's thread count)."""
    code = ("import sys, torch; "
            f"torch.set_num_threads({int(threads)}); "
            "from faseg_rt.cli import main; sys.exit(main(sys.argv[1:]))")
    return [sys.executable, "-c", code, *args]


def label_command(*args: str) -> list[str]:
    """The real `faseg-rt label` driver (it loads no model: the workers do)."""
    return [sys.executable, "-m", "faseg_rt.cli", "label", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(root: int) -> list[int]:
    """root and every process below it (from /proc; children first-found order)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_tree(proc: subprocess.Popen, sig: int, grace_s: float = 10.0) -> None:
    """Signal proc and every descendant (recorded before the signal); SIGKILL what outlives grace_s."""
    pids = descendants(proc.pid) if proc.poll() is None else []
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        proc.poll()
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


#: Run beside each node in a session of its own: when the process that started the node dies
#: without stopping it (a CI timeout kills the test run), SIGKILL the node's whole process group
#: (`ray start`, GCS, raylet, agents; workers die with their raylet).  Ends by itself once the
#: group is gone.  argv: parent pid, node process group id.
WATCHDOG = """
import os, signal, sys, time
parent, group = int(sys.argv[1]), int(sys.argv[2])
def exists(kill):
    try:
        kill(0)
        return True
    except ProcessLookupError:
        return False
while exists(lambda s: os.killpg(group, s)):
    if not exists(lambda s: os.kill(parent, s)):
        os.killpg(group, signal.SIGKILL)
        break
    time.sleep(1)
"""


class RayNode:
    """One `ray start --block` process (head or worker) and its log."""

    def __init__(self, args: list[str], log: Path, env: dict):
        self.log = log
        self.proc = subprocess.Popen(["ray", "start", "--block", *args], stdout=open(log, "wb"),
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.watchdog = subprocess.Popen([sys.executable, "-c", WATCHDOG, str(os.getpid()),
                                          str(self.proc.pid)], start_new_session=True,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_started(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if b"Ray runtime started" in self.log.read_bytes():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        text = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"ray start did not come up (rc {self.proc.poll()}):\n{text}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        kill_tree(self.proc, sig)
        try:  # anything of the node's own process group that was not found as a descendant
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:  # the group is gone, so the watchdog ends within a second
            self.watchdog.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.watchdog.kill()
            self.watchdog.wait()


class RayCluster:
    """A head (1 CPU) plus worker nodes (1 CPU each) on 127.0.0.1; `stop()` ends them all."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = small_env()
        self.nodes: list[RayNode] = []
        self.head: RayNode | None = None

    def _node_args(self) -> list[str]:
        # a short temp dir per node: Ray's socket paths must stay under ~107 characters
        temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
        self._temps.append(temp)
        ports = {"--node-manager-port": free_port(), "--object-manager-port": free_port(),
                 "--runtime-env-agent-port": free_port(), "--metrics-export-port": free_port(),
                 "--dashboard-agent-listen-port": free_port(),
                 "--dashboard-agent-grpc-port": free_port()}
        return ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0",
                "--temp-dir", temp, "--object-store-memory", str(80 * 2**20),
                "--disable-usage-stats", *[str(x) for kv in ports.items() for x in kv]]

    _temps: list[str]

    def start(self, workers: int = 1) -> "RayCluster":
        self._temps = []
        try:
            self.head = RayNode(["--head", "--port", str(self.port), "--include-dashboard", "false",
                                 "--dashboard-port", str(free_port()), *self._node_args()],
                                self.workdir / "head.log", self.env)
            self.nodes.append(self.head)
            self.head.wait_started()
            for _ in range(workers):
                self.add_worker()
        except BaseException:
            self.stop()
            raise
        return self

    def add_worker(self) -> RayNode:
        node = RayNode(["--address", self.address, *self._node_args()],
                       self.workdir / f"worker{len(self.nodes)}.log", self.env)
        self.nodes.append(node)
        node.wait_started()
        return node

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.kill(signal.SIGTERM)
        self.nodes.clear()
        import shutil

        for temp in getattr(self, "_temps", []):
            shutil.rmtree(temp, ignore_errors=True)
