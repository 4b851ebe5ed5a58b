"""What the exported backends load, and how it is made: graphs (one I/O spec per network),
onnx_export, tensorrt_build, cache (per-file build records), build (the whole export), manifest
(what an engines directory was built from, verified on load)."""
