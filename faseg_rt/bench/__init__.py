"""Benchmarks, each comparing against a baseline run in the same process, so a shared machine
moves both together.  Run through `faseg-rt bench KIND` or the scripts in benchmarks/:

    latency       per-stage latency at batch 1 against the literal reference and the network floor;
                  with --background N each path idle and beside N busy processes (loaded.py,
                  contention.py: the busy neighbours and --cpus pinning)
    throughput    images/s and peak memory over batch sizes (one process per batch size)
    workers       `faseg-rt label` as W workers x T threads on the same images: images/s per setting
    ablations     each fast-path optimisation against the plain way, on the same tensors
    profile       torch.profiler's top operators of one warm call
    vocab         time by stage and extra memory for K = 1 .. 1000 classes
    precision     a reduced dtype against fp32 and the float64 oracle: stage errors, mask agreement
    ops           bf16 against fp32 per operator at SD 1.5 shapes, and the call's ceiling
    gpu           a time-boxed, resumable plan of GPU measurements (gpu.py, gpu_plan.py, gpu_steps.py)
    localisation  which toy-world training choice makes cross-attention find objects soonest
                  (benchmarks/localisation.py)
    accuracy      mIoU of the method, its ablations and every precision / backend / batch variant
                  on the trained toy model (benchmarks/accuracy.py)

Shared pieces: common.py (models, timing, memory), timers.py (latency's timers), frontend.py
(the caption and recognise stages of `latency --frontend`), plot.py (a line chart for localisation).
"""
