"""`faseg-rt serve`: the Segmenter as an HTTP service on Ray Serve (faseg_rt.serve)."""

from __future__ import annotations

from faseg_rt.cli.args import (DEFAULT_MODEL, add_model_args, check_engines, frontend_kwargs,
                               positive_int_arg)


def cmd_serve(args) -> int:
    check_engines(args)  # before Ray Serve is imported: names --engines, not engines=DIR
    from faseg_rt.serve.run import serve_forever

    return serve_forever(args.model, host=args.host, port=args.port, address=args.address,
                         backend=args.backend, device=args.device, dtype=args.dtype,
                         engines=args.engines, config=args.config, frontend=frontend_kwargs(args),
                         replicas=args.replicas, max_batch_size=args.max_batch_size,
                         batch_wait_ms=args.batch_wait_ms, max_queued=args.max_queued,
                         max_request_mb=args.max_request_mb, num_threads=args.num_threads)


def _non_negative(kind):
    def parse(text: str):
        import argparse

        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
        if not v >= 0:
            raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
        return v
    return parse


def register(sub) -> None:
    """Mount `serve` on the core CLI."""
    from faseg_rt.cli.frontend_args import add_frontend_args

    s = sub.add_parser("serve", description="Deploy the model as a Ray Serve application with dynamic "
                                            "batching; blocks until Ctrl-C / SIGTERM.")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=positive_int_arg, default=8000, help="port to listen on (default 8000)")
    s.add_argument("--replicas", type=positive_int_arg, default=1, help="model replicas (default 1)")
    s.add_argument("--max-batch-size", type=positive_int_arg, default=8,
                   help="images per batched model call at most (default 8)")
    s.add_argument("--batch-wait-ms", type=_non_negative(float), default=50.0,
                   help="how long a batch waits to fill (default 50 ms)")
    s.add_argument("--max-queued", type=_non_negative(int), default=64,
                   help="waiting requests beyond the replicas' before 503 + Retry-After (default 64)")
    s.add_argument("--max-request-mb", type=_non_negative(float), default=32.0,
                   help="request size cap, 413 above (default 32 MiB)")
    s.add_argument("--num-threads", type=positive_int_arg, default=None,
                   help="torch threads per CPU replica (default: the cluster's CPUs / replicas)")
    s.add_argument("--address", default=None,
                   help="Ray cluster to join ('auto', host:port); default: RAY_ADDRESS or a new "
                        "local Ray, shut down on exit")
    add_model_args(s, default_model=DEFAULT_MODEL)
    add_frontend_args(s, candidates=False)
    s.set_defaults(func=cmd_serve)
