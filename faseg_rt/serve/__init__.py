"""A segmentation service on Ray Serve (`faseg-rt serve`, extra `.[serve]`).

request.py checks a request's form fields and shapes its answer; batcher.py runs one dynamic
batch through Segmenter.segment_batch; http.py reads bounded bodies and multipart forms;
settings.py checks the service's settings; page.py is the page at GET /; app.py is the Serve
application (FastAPI ingress, `@serve.batch`, back-pressure); run.py starts or joins Ray, deploys
it and shuts everything down on SIGINT / SIGTERM.
"""
