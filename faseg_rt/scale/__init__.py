"""Scale-out: label many images on a Ray cluster with Ray Data (`faseg-rt label`).

inputs.py resolves what to read, manifest.py records what finished (and resumes), label.py runs
the Ray job."""
