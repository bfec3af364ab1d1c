"""`astria-queue metrics`, `simulator`, `callbacks`, `api` and `demo`: what listens, and the demo.
With --json a server's first line is `{"url"}` and its log lines are JSON (LOG_FORMAT=json)."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from worker.cli.output import CommandFailed, json_wanted, say
from worker.errors import AstriaQueueError

if TYPE_CHECKING:
    from astria_local.sim_limit import Counter


def _json_logs() -> None:
    """--json: this process's log lines as JSON too (read when the settings are first made)."""
    if json_wanted():
        os.environ["LOG_FORMAT"] = "json"


@click.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", type=int, default=9464, show_default=True)
def metrics(host: str, port: int) -> None:
    """Serve Prometheus metrics of the whole pool on /metrics (where no receiver runs)."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from worker.edge import metrics as pool_metrics

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = make_server(host, port, pool_metrics.wsgi_app, handler_class=Quiet)
    url = f"http://{host}:{server.server_port}/metrics"
    say(f"metrics on {url}", {"url": url})
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8765, show_default=True)
@click.option("--api-key", default="sim-key", show_default=True, envvar="ASTRIA_API_KEY")
@click.option("--generation-seconds", type=float, default=5.0, show_default=True)
@click.option("--pti-tunes", default="", help="Comma-separated tune ids that answer the pti 422.")
@click.option("--faceid-tunes", default="", help="Comma-separated tune ids: the faceid 422.")
@click.option("--flux-tunes", default="", help="Comma-separated tune ids: the Flux lora 422.")
@click.option("--latency", type=float, default=0.0, show_default=True,
              help="Seconds every answer takes.")
@click.option("--latency-jitter", type=float, default=0.5, show_default=True,
              help="+/- this share of --latency.")
@click.option("--fault-slow", type=float, default=0.0, help="Share of slow answers.")
@click.option("--slow-seconds", type=float, default=1.0, show_default=True)
@click.option("--slow-status", type=int, default=None,
              help="A slow answer ends with this status (default: the real answer).")
@click.option("--rate-limit", type=float, default=0.0,
              help="Account limit, requests per second (0: none).")
@click.option("--rate-limit-burst", type=float, default=None)
@click.option("--rate-limit-counter", type=click.Choice(["bucket", "fixed", "sliding"]),
              default="bucket", show_default=True,
              help="How the account limit is counted: a token bucket, per whole second, or in "
                   "any one second.")
@click.option("--rate-limit-methods", type=click.Choice(["ALL", "POST"]), default="ALL",
              show_default=True)
@click.option("--no-retry-after", is_flag=True, help="The account limit's 429s omit Retry-After.")
@click.option("--fault-429", type=float, default=0.0, help="Probability per request.")
@click.option("--fault-5xx", type=float, default=0.0)
@click.option("--fault-504-after-create", type=float, default=0.0)
@click.option("--fault-garbage", type=float, default=0.0)
def simulator(host: str, port: int, api_key: str, generation_seconds: float, pti_tunes: str,
              faceid_tunes: str, flux_tunes: str, latency: float, latency_jitter: float,
              fault_slow: float,
              slow_seconds: float, slow_status: int | None, rate_limit: float,
              rate_limit_burst: float | None, rate_limit_counter: Counter,
              rate_limit_methods: str, no_retry_after: bool,
              fault_429: float, fault_5xx: float, fault_504_after_create: float,
              fault_garbage: float) -> None:
    """Run the Astria simulator (point ASTRIA_BASE_URL at it)."""
    from astria_local.simulator import AstriaSimulator, SimConfig

    def ids(raw: str) -> set[int]:
        return {int(x) for x in raw.split(",") if x.strip()}

    sim = AstriaSimulator(SimConfig(
        api_key=api_key, generation_seconds=generation_seconds, pti_tunes=ids(pti_tunes),
        faceid_tunes=ids(faceid_tunes), flux_tunes=ids(flux_tunes), latency_seconds=latency,
        latency_jitter=latency_jitter,
        fault_slow=fault_slow, slow_seconds=slow_seconds, slow_status=slow_status,
        rate_limit=rate_limit, rate_limit_burst=rate_limit_burst,
        rate_limit_counter=rate_limit_counter, rate_limit_methods=rate_limit_methods,
        rate_limit_retry_after=not no_retry_after,
        fault_429=fault_429, fault_5xx=fault_5xx, fault_504_after_create=fault_504_after_create,
        fault_garbage=fault_garbage,
    ), host=host, port=port)
    say(f"Astria simulator on {sim.url} (Ctrl-C to stop)", {"url": sim.url})
    with contextlib.suppress(KeyboardInterrupt):
        sim.serve_forever()


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--host", default="0.0.0.0", show_default=True, envvar="CALLBACK_HOST")
@click.option("--port", type=int, default=8080, show_default=True, envvar="CALLBACK_PORT")
def callbacks(host: str, port: int) -> None:
    """The receiver of Astria's callbacks (also /healthz and /metrics), served by gunicorn."""
    _json_logs()
    run_receiver(host, port)


def run_receiver(host: str, port: int) -> None:
    """Exec gunicorn with the receiver's settings: the Procfile's own command."""
    os.environ.update(CALLBACK_HOST=host, CALLBACK_PORT=str(port))
    args = ["gunicorn", "-c", "python:worker.edge.gunicorn_conf", "worker.edge.receiver:app"]
    os.execvp(sys.executable, [sys.executable, "-m", *args])


@click.command()
def api() -> None:
    """The HTTP API for producers (API_HOST:API_PORT), served by uvicorn."""
    import uvicorn

    from worker.logs import configure
    from worker.runtime import runtime

    _json_logs()
    s = runtime().settings
    configure()  # uvicorn's loggers propagate to ours (log_config=None)
    uvicorn.run("worker.edge.api:create_app", factory=True, host=s.api_host, port=s.api_port,
                proxy_headers=False, server_header=False, log_config=None)


@click.command()
@click.option("--timeout", type=float, default=300.0, show_default=True)
def demo(timeout: float) -> None:
    """Run the main job end to end (throwaway Redis and simulator when not configured)."""
    from astria_local.demo import run_demo

    try:
        code = run_demo(timeout, say)
    except AstriaQueueError as exc:
        raise CommandFailed(str(exc)) from None
    sys.exit(code)


COMMANDS = (metrics, simulator, callbacks, api, demo)
