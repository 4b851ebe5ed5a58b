"""What the exported backends load, and how it is made: graphs (one I/O spec per network),
onnx_export (fp32 and fp16 graphs), onnx_checks (CPU structure checks of every export),
tensorrt_build (strongly typed engines through polygraphy), cache (per-file build records), build
(the whole export), golden (golden data and validation of a backend), manifest (what an engines
directory was built from, verified on load)."""
