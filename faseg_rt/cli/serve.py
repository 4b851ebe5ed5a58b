"""`faseg-rt serve`: the Segmenter as an HTTP service on Ray Serve (faseg_rt.serve).

Every default shown here is ServeSettings' (faseg_rt/serve/settings.py), and every value is
checked there, through faseg_rt.rules, before Ray starts."""

from __future__ import annotations

from faseg_rt.cli.args import DEFAULT_MODEL, add_model_args, check_engines, frontend_kwargs

#: flag -> (ServeSettings field, number kind, help with {default} filled from the settings)
_LIMITS = {
    "--replicas": ("replicas", int, "model replicas (default {})"),
    "--max-batch-size": ("max_batch_size", int, "images per batched model call at most (default {})"),
    "--batch-wait-ms": ("batch_wait_ms", float, "how long a batch waits to fill (default {} ms)"),
    "--max-queued": ("max_queued", int, "checked requests waiting beyond the two batches a "
                                        "replica holds, then 503 + Retry-After (default {})"),
    "--max-request-mb": ("max_request_mb", float, "request body cap, 413 above (default {} MiB)"),
    "--body-timeout": ("body_timeout_s", float, "seconds a request body may take to arrive, "
                                                "then 408 and the connection closes (default {})"),
    "--max-pixels": ("max_pixels", int, "largest image in pixels, read from its header before "
                                        "decoding, 400 above (default {})"),
    "--max-classes": ("max_classes", int, "most classes per request, 400 above, before any "
                                          "model runs (default {})"),
    "--num-threads": ("num_threads", int, "torch threads per CPU replica (default: one node's "
                                          "CPUs / replicas)"),
}


def cmd_serve(args) -> int:
    check_engines(args)  # before Ray Serve is imported: names --engines, not engines=DIR
    from faseg_rt.serve.run import serve_forever

    limits = {dest: getattr(args, dest) for dest, _, _ in _LIMITS.values()}
    return serve_forever(args.model, host=args.host, port=args.port, address=args.address,
                         backend=args.backend, device=args.device, dtype=args.dtype,
                         engines=args.engines, config=args.config, frontend=frontend_kwargs(args),
                         batching=args.batching, **limits)


def _number(kind, name):
    """argparse type: rules.number of the text (the same check as ServeSettings.make)."""
    def parse(text: str):
        import argparse

        from faseg_rt import rules
        from faseg_rt.errors import InvalidInputError
        from faseg_rt.serve.settings import NUMBERS

        try:
            return rules.number(text, "the value", NUMBERS[name][1], integer=kind is int)
        except InvalidInputError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def register(sub) -> None:
    """Mount `serve` on the core CLI."""
    from faseg_rt.cli.args import positive_int_arg
    from faseg_rt.cli.frontend_args import add_frontend_args
    from faseg_rt.serve.settings import ServeSettings

    s = sub.add_parser("serve", description="Deploy the model as a Ray Serve application with dynamic "
                                            "batching; blocks until Ctrl-C / SIGTERM.")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=positive_int_arg, default=8000, help="port to listen on (default 8000)")
    for flag, (dest, kind, text) in _LIMITS.items():
        default = ServeSettings.default(dest)
        s.add_argument(flag, dest=dest, type=_number(kind, dest), default=default, help=text.format(default))
    s.add_argument("--address", default=None,
                   help="Ray cluster to join ('auto', host:port); default: RAY_ADDRESS or a new "
                        "local Ray, shut down on exit")
    add_model_args(s, default_model=DEFAULT_MODEL)
    add_frontend_args(s, candidates=False, loaded_at_start=True)
    s.set_defaults(func=cmd_serve)
