"""gunicorn settings of the receiver:
`gunicorn -c python:worker.edge.gunicorn_conf worker.edge.receiver:app`.

gevent workers: one greenlet per connection, so thousands of idle connections cost memory, not
threads. A request whose headers do not arrive within `keepalive` seconds is dropped (gunicorn
bounds each request read by it), as is a kept-alive connection idle for as long; the body is
bounded by the app (`worker.edge.receiver`). SIGTERM stops accepting and lets requests in flight
finish within `graceful_timeout`. gunicorn's own log lines go through `RedactTokens`: a line about
a request it could not serve prints the request's URL, and a callback URL carries a job's token.
"""

from __future__ import annotations

import logging
import os
import re

from worker.net.fdlimit import raise_open_file_limit

_TOKEN = re.compile(r"(token=)[^&\s'\"]+")


class RedactTokens(logging.Filter):
    """Replace `token=...` in a line by `token=[redacted]`. (Kept here, with no import of the
    worker: gunicorn loads this file before gevent patches the standard library.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message:
            record.msg, record.args = _TOKEN.sub(r"\1[redacted]", message), None
        return True


for _name in ("gunicorn.error", "gunicorn.access"):
    logging.getLogger(_name).addFilter(RedactTokens())

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


def post_worker_init(worker: object) -> None:
    """In each worker, once gevent has patched the standard library: our log configuration
    (LOG_FORMAT, LOG_LEVEL) for the app's lines and gunicorn's own, tokens redacted in both."""
    from worker.logs import configure, formatter

    configure()
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactTokens())
    for handler in logging.getLogger("gunicorn.error").handlers:
        handler.setFormatter(formatter())


def on_starting(server: object) -> None:
    """Idle connections each hold a file descriptor: allow as many as the system lets us."""
    raise_open_file_limit()
