"""Benchmark of the pipeline against the same machine's Celery ceiling (`python -m bench`)."""
