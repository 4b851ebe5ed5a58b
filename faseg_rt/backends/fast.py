"""The torch fast path's switches: torch.compile (networks, and HARD / TTF) and CUDA graphs.

Both are off by default: which to turn on is decided by measurement on a GPU
(`faseg-rt bench gpu`, benchmarks/README.md).  fp16 with flash attention needs no switch: the
attention processor calls F.scaled_dot_product_attention, which takes the flash kernel for fp16
CUDA tensors of SD's head widths (the bench's env step checks that it runs).

    Segmenter.from_pretrained(model, compile=True)            # inductor
    Segmenter.from_pretrained(model, compile="aot_eager")     # dynamo capture only (cheap check)
    Segmenter.from_pretrained(model, device="cuda", cuda_graphs=True)

compile: every network module and the HARD / TTF functions go through torch.compile with
dynamic=False (one specialised graph per batch shape: the shapes a service sees are few).  Past
RECOMPILE_LIMIT shapes a function warns once and runs uncompiled (ShapeLimited) instead of
dynamo's silent fallback; compiled or not, the capture takes class chunks in bounded groups.
cuda_graphs: each network call is replayed from a CUDA graph captured once per input signature
(shapes and dtypes), with static input buffers the call's tensors are copied into and outputs
copied out (stride-0 outputs stay stride 0); the network's kernel launches then cost one replay.
The four runners of a backend share one stream, lock and memory pool (CudaGraphs), with at most
MAX_GRAPHS captured signatures.  The copy-out of q / k (~0.8 GB at N=16 on SD 1.5) is a
device-to-device copy of well under a millisecond on an H100; handing out the static buffers
themselves would need the lock held until the Segmenter has finished HARD.  Captures need CUDA.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch

from faseg_rt.errors import InvalidInputError

#: torch.compile backends accepted by `compile=` (True means inductor).
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")


def compile_backend(compile) -> str | None:
    """The torch.compile backend `compile` asks for, or None (off)."""
    if compile is None or compile is False:
        return None
    if compile is True:
        return "inductor"
    if isinstance(compile, str) and compile in COMPILE_BACKENDS:
        return compile
    raise InvalidInputError(f"compile must be True, False or one of {', '.join(COMPILE_BACKENDS)}; got {compile!r}")


def check_cuda_graphs(cuda_graphs, device: torch.device) -> bool:
    if not isinstance(cuda_graphs, bool):
        raise InvalidInputError(f"cuda_graphs must be True or False, got {cuda_graphs!r}")
    if cuda_graphs and torch.device(device).type != "cuda":
        raise InvalidInputError(f"cuda_graphs=True needs device='cuda' (got {device}); drop cuda_graphs")
    return cuda_graphs


def compiled(fn, backend: str | None):
    """`fn` (a module or function) through torch.compile with `backend`, or `fn` when None."""
    if backend is None:
        return fn
    return ShapeLimited(fn, torch.compile(fn, backend=backend, dynamic=False))


#: Input shapes one compiled function is compiled for (dynamo's own recompile limit): past it,
#: dynamo would run the function eagerly without a word.
RECOMPILE_LIMIT = 8


class ShapeLimited:
    """A torch.compile-d function that says when it stops being compiled.

    dynamic=False compiles once per input shape signature; after RECOMPILE_LIMIT of them dynamo
    falls back to eager silently.  This counts the signatures and, at the first one past the
    limit, warns once with what to do, then calls the plain function (whose capture takes class
    chunks in bounded groups, like the compiled one).
    """

    def __init__(self, fn, compiled_fn, limit: int = RECOMPILE_LIMIT):
        self.fn, self.compiled_fn, self.limit = fn, compiled_fn, limit
        self._seen: set = set()
        self._lock = threading.Lock()

    def __call__(self, *args, **kwargs):
        sig = tuple((tuple(a.shape), a.dtype) if isinstance(a, torch.Tensor) else type(a)
                    for a in (*args, *kwargs.values()))
        with self._lock:
            fits = sig in self._seen or len(self._seen) < self.limit
            if fits:
                self._seen.add(sig)
            elif self.limit >= 0:
                import warnings

                warnings.warn(f"{getattr(self.fn, '__name__', type(self.fn).__name__)} was compiled for "
                              f"{self.limit} input shapes; new shapes run uncompiled. Keep batch_size and "
                              "vocabulary sizes to a few values, or use compile=False", RuntimeWarning)
                self.limit = -1  # warned; every new shape from now on runs eagerly
        return self.compiled_fn(*args, **kwargs) if fits else self.fn(*args, **kwargs)


#: Captured signatures one backend keeps (see CudaGraphs).
MAX_GRAPHS = 8


class CudaApi:
    """The torch.cuda calls the CUDA-graph runners make (tests pass a fake to run the logic on
    the CPU)."""

    def current_stream(self, device):
        return torch.cuda.current_stream(device)

    def new_stream(self, device):
        return torch.cuda.Stream(device)

    def graph_pool(self):
        return torch.cuda.graph_pool_handle()

    def new_graph(self):
        return torch.cuda.CUDAGraph()

    def on(self, stream):
        return torch.cuda.stream(stream)

    def capture(self, graph, pool, stream):
        # thread_local: another thread's synchronising call during a capture does not fail it
        return torch.cuda.graph(graph, pool=pool, stream=stream, capture_error_mode="thread_local")

    def record_stream(self, t: torch.Tensor, stream) -> None:
        t.record_stream(stream)


class CudaGraphs:
    """What the CUDA-graph runners of one backend share, so their replays never overlap.

    stream: every copy-in, replay and copy-out runs on it; it waits (by event) on the caller's
        current stream before reading the caller's tensors, and the caller's stream waits on it
        before the outputs are handed out, so no host synchronisation is needed either way.
    lock: held from the copy into the static inputs until the outputs are copied out, so no
        other thread can overwrite a static input or output of a replay still in flight.
    pool: one memory pool for every captured graph (their replays are serialised by the lock,
        so they may share activation memory).
    max_graphs: captured signatures kept, least recently used dropped first (each holds its
        static inputs and outputs: at N=16 the unet_attn q / k buffers alone take ~0.8 GB).
    """

    def __init__(self, device, max_graphs: int = MAX_GRAPHS, api: CudaApi | None = None):
        self.api = api or CudaApi()
        self.device = torch.device(device)
        self.stream = self.api.new_stream(self.device)
        self.pool = self.api.graph_pool()
        self.lock = threading.Lock()
        self.max_graphs = max_graphs
        self.graphs: OrderedDict = OrderedDict()
        self.captures = 0

    def runner(self, name: str, runner) -> "CudaGraphRunner":
        return CudaGraphRunner(name, runner, self)

    def lookup(self, key):
        entry = self.graphs.get(key)
        if entry is not None:
            self.graphs.move_to_end(key)
        return entry

    def keep(self, key, entry) -> None:
        self.graphs[key] = entry
        self.captures += 1
        while len(self.graphs) > self.max_graphs:
            self.graphs.popitem(last=False)[1][0].reset()  # its memory goes back to the pool


def hand_out(t: torch.Tensor) -> torch.Tensor:
    """A copy of a static output the caller may keep.  Dimensions of stride 0 (the expanded
    zeros of a skipped resolution) stay expanded: only one element along them is copied."""
    if t.numel() > 1 and 0 in t.stride():
        compact = t[tuple(slice(0, 1) if st == 0 else slice(None) for st in t.stride())]
        return compact.clone().expand(t.shape)
    return t.clone()


class CudaGraphRunner:
    """A runner (named tensors in, named tensors out) replayed from CUDA graphs.

    One graph per input signature (shapes and dtypes), captured at its first call after two
    warm-up runs on the shared stream (lazy initialisation, cuDNN autotuning and compilation
    stay outside the capture).  See CudaGraphs for the stream, lock, pool and LRU cap.
    """

    def __init__(self, name: str, runner, shared: CudaGraphs):
        self.name = name
        self.runner = runner
        self.shared = shared

    def __call__(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        sh = self.shared
        key = (self.name,) + tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(inputs.items()))
        caller = sh.api.current_stream(sh.device)
        with sh.lock, torch.inference_mode():
            sh.stream.wait_stream(caller)              # the caller's inputs are written
            with sh.api.on(sh.stream):
                entry = sh.lookup(key)
                if entry is None:
                    entry = self._capture(inputs)
                    sh.keep(key, entry)
                graph, static_in, static_out = entry
                for k, v in inputs.items():
                    static_in[k].copy_(v)
                graph.replay()
                out = {k: hand_out(v) for k, v in static_out.items()}
            caller.wait_stream(sh.stream)              # the caller sees finished outputs
            for v in out.values():                     # allocated on our stream, used on the caller's
                sh.api.record_stream(v, caller)
        return out

    def _capture(self, inputs: dict):
        """(graph, static inputs, static outputs), on the shared stream and pool."""
        sh = self.shared
        static_in = {k: v.detach().to(sh.device).clone() for k, v in inputs.items()}
        for _ in range(2):
            self.runner(**static_in)
        graph = sh.api.new_graph()
        with sh.api.capture(graph, sh.pool, sh.stream):
            static_out = self.runner(**static_in)
        return graph, static_in, static_out
