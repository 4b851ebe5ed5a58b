"""The CUDA-graph runners' logic on the CPU, through a fake of the torch.cuda calls they make:
event waits both ways, the lock held from copy-in to copy-out, thread-local capture, one pool
per backend, the LRU cap on captured signatures, and stride-0 outputs handed out as stride 0.
(The real capture needs CUDA: the GPU plan's graphs-* steps compare it with eager.)"""

from __future__ import annotations

import contextlib

import torch

from faseg_rt.backends.fast import CudaGraphs, hand_out


class FakeStream:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def wait_stream(self, other):
        self.log.append(("wait", self.name, other.name))


class FakeGraph:
    """Records the runner's call at capture; replay runs it again on the static inputs."""

    def __init__(self, log):
        self.log, self.fn, self.was_reset = log, None, False

    def replay(self):
        self.log.append(("replay",))
        if self.fn is not None:
            self.fn()

    def reset(self):
        self.was_reset = True


class FakeCuda:
    def __init__(self, shared_ref):
        self.log, self.pools, self.graphs, self.shared_ref = [], 0, [], shared_ref
        self.caller = FakeStream("caller", self.log)

    def current_stream(self, device):
        return self.caller

    def new_stream(self, device):
        return FakeStream("runner", self.log)

    def graph_pool(self):
        self.pools += 1
        return ("pool", self.pools)

    def new_graph(self):
        self.graphs.append(FakeGraph(self.log))
        return self.graphs[-1]

    @contextlib.contextmanager
    def on(self, stream):
        self.log.append(("on", stream.name))
        yield

    @contextlib.contextmanager
    def capture(self, graph, pool, stream):
        self.log.append(("capture", pool, stream.name, "thread_local"))
        yield

    def record_stream(self, t, stream):
        self.log.append(("record", stream.name))


def _runner(shared, calls):
    """A network stand-in: y = 2x, and a stride-0 zero output of a skipped resolution."""
    def run(x):
        calls.append(shared.lock.locked())
        return {"y": x * 2, "cross_64": torch.zeros(()).expand(x.shape[0], 3, 1000, 77)}

    return run


def _make(max_graphs=8):
    holder = {}
    api = FakeCuda(holder)
    shared = CudaGraphs("cpu", max_graphs=max_graphs, api=api)
    calls: list = []
    inner = _runner(shared, calls)

    class Capturing:
        """Binds each fake graph to the static inputs of its capture."""
        def __call__(self, **kw):
            out = inner(**kw)
            if api.log and api.log[-1][0] == "capture" and api.graphs[-1].fn is None:
                g, static, res = api.graphs[-1], kw, out
                g.fn = lambda: res["y"].copy_(inner(**static)["y"])
            return out

    return shared, shared.runner("unet", Capturing()), api, calls


def test_replay_is_ordered_by_events_and_locked_until_copied_out():
    shared, run, api, calls = _make()
    x = torch.arange(6.0).view(2, 3)
    out = run(x=x)
    assert torch.equal(out["y"], x * 2)
    log = [e[0] if e[0] != "wait" else e for e in api.log]
    # the runner stream waits on the caller before touching inputs; the caller waits on it after
    assert log[0] == ("wait", "runner", "caller") and ("wait", "caller", "runner") in log
    assert log.index(("wait", "caller", "runner")) > log.index("replay")
    assert ("capture", ("pool", 1), "runner", "thread_local") in api.log
    assert all(calls)  # the network (warm-up, capture and replay) ran with the lock held
    # a second call reuses the graph and copies the new input in: no stale static buffer
    out2 = run(x=x + 1)
    assert torch.equal(out2["y"], (x + 1) * 2) and torch.equal(out["y"], x * 2)  # outputs are copies
    assert shared.captures == 1


def test_stride0_output_is_not_densified():
    shared, run, api, _ = _make()
    out = run(x=torch.ones(2, 3))
    c = out["cross_64"]
    assert c.shape == (2, 3, 1000, 77) and c.stride() == (0, 0, 0, 0)
    assert c.untyped_storage().nbytes() == 4 and float(c.abs().max()) == 0
    t = torch.randn(4, 1, 5).expand(4, 6, 5)  # partly stride 0: copied once along the others
    h = hand_out(t)
    assert torch.equal(h, t) and h.stride()[1] == 0 and h.untyped_storage().nbytes() == 4 * 4 * 5


def test_signatures_share_one_pool_and_are_capped_lru():
    shared, run, api, _ = _make(max_graphs=2)
    other = shared.runner("vae", lambda x: {"y": x + 1})
    for n in (1, 2):
        run(x=torch.ones(n, 3))
    other(x=torch.ones(1, 3))      # a third signature: the least recently used (n=1) is dropped
    assert api.pools == 1 and len(shared.graphs) == 2 and api.graphs[0].was_reset
    run(x=torch.ones(2, 3))        # still kept: no new capture
    assert shared.captures == 3
    run(x=torch.ones(1, 3))        # dropped before: captured again
    assert shared.captures == 4 and len(shared.graphs) == 2


def test_compiled_function_says_when_it_stops_compiling():
    """Past the recompile limit a new shape runs the plain function, with one warning (dynamo
    alone would fall back to eager without a word)."""
    import warnings

    from faseg_rt.backends.fast import ShapeLimited

    ran = []
    f = ShapeLimited(lambda x: ran.append("eager") or x, lambda x: ran.append("compiled") or x, limit=2)
    f(torch.zeros(1))
    f(torch.zeros(2))
    f(torch.zeros(1))                      # a shape seen before: still compiled
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        f(torch.zeros(3))
        f(torch.zeros(4))
    assert ran == ["compiled"] * 3 + ["eager"] * 2
    assert len(w) == 1 and "compiled for 2 input shapes" in str(w[0].message)
    f(torch.zeros(2))
    assert ran[-1] == "compiled"
