"""nada-app: a local web page over nada's Python API for the whole loop: train (queued, one at a time,
in a worker thread), watch the samples, compare the runs, draw your own photo in every domain, export
and serve them, fetch images over gRPC. jobs.py and views.py hold the work; page.py only lays it out."""
