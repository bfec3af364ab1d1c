"""gunicorn settings of the receiver: `gunicorn -c python:worker.gunicorn_conf worker.receiver:app`.

gevent workers: one greenlet per connection, so thousands of idle connections cost memory, not
threads. A request whose headers do not arrive within `keepalive` seconds is dropped (gunicorn
bounds each request read by it), as is a kept-alive connection idle for as long; the body is
bounded by the app (`worker.receiver`). SIGTERM stops accepting and lets requests in flight
finish within `graceful_timeout`.
"""

from __future__ import annotations

import os

from worker.fdlimit import raise_open_file_limit

bind = [f"{os.environ.get('CALLBACK_HOST', '0.0.0.0')}:"
        f"{os.environ.get('CALLBACK_PORT') or os.environ.get('PORT') or '8080'}"]
worker_class = "gevent"
workers = int(os.environ.get("CALLBACK_WORKERS", "2"))
worker_connections = 4096
keepalive = 15
timeout = 30
graceful_timeout = 20
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
accesslog = None
errorlog = "-"
loglevel = os.environ.get("CALLBACK_LOG_LEVEL", "info")


def on_starting(server: object) -> None:
    """Idle connections each hold a file descriptor: allow as many as the system lets us."""
    raise_open_file_limit()
