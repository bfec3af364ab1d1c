"""`astria-queue`: enqueue specs, look at jobs and dead letters, run the simulator or the demo.

Every command takes `--json` (`worker.cli.output`). The commands live by what they are for:
`produce` (enqueue, batch, cancel), `jobs` (jobs list, status, probe), `dead` (dead letters of
jobs, messages, webhooks, copies), `serve` (metrics, simulator, callbacks, api, demo); this
module holds the group and the commands that only read (schema, openapi, stats, health).
"""

from __future__ import annotations

import os
import sys

import click

from worker.cli import dead as dead_letters
from worker.cli import jobs as job_commands
from worker.cli import produce, serve
from worker.cli.output import print_json, say, with_json
from worker.errors import AstriaQueueError


@click.group()
@click.version_option(package_name="astria-queue", prog_name="astria-queue")
@click.option("--redis-url", envvar="REDIS_URL", help="Redis, in kombu's URL forms (REDIS_URL).")
def main(redis_url: str | None) -> None:
    """Astria job queue: configuration comes from the environment (see README)."""
    if redis_url:
        os.environ["REDIS_URL"] = redis_url  # read when a command first needs the settings


for command in (*produce.COMMANDS, *job_commands.COMMANDS, *dead_letters.COMMANDS,
                *serve.COMMANDS):
    main.add_command(command)


@main.command()
@click.option("--of", "name", type=click.Choice(["spec", "outcome", "failure", "webhook-event"]),
              default="spec", show_default=True)
def schema(name: str) -> None:
    """Print a JSON Schema: of a spec (schema/prompt-spec.schema.json), or of what we send
    (schema/NAME.schema.json)."""
    from worker.flow.shapes import schemas
    from worker.spec import spec_json_schema

    print_json(spec_json_schema() if name == "spec" else schemas()[name])


@main.command()
def openapi() -> None:
    """Print the HTTP API's OpenAPI document (also in schema/openapi.json)."""
    from worker.edge.api import create_app
    from worker.runtime import runtime

    print_json(create_app(runtime()).openapi())


@main.command()
def stats() -> None:
    """Counts by state, per tenant and lane (in flight, latency, cost), requests by status."""
    from worker.runtime import runtime

    print_json(runtime().stats.snapshot())


@main.command()
@click.option("--timeout", type=float, default=5.0, show_default=True)
def health(timeout: float) -> None:
    """Check Redis, the engines' heartbeats, a live worker and the Astria key; one line, exit
    code 0 when all is well (an engine that stopped beating while none beats is not)."""
    import requests

    from worker.broker.app import app
    from worker.edge import health as pool_health
    from worker.runtime import runtime

    rt = runtime()
    report = pool_health.check(rt)
    problems = [] if report.ok else report.problems()
    try:
        replies = app.control.ping(timeout=timeout)
        if not replies:
            problems.append("worker: none answered")
    except Exception as exc:
        problems.append(f"worker: {type(exc).__name__}")
    try:
        answer = requests.get(
            rt.settings.astria_base_url.rstrip("/") + "/prompts", params={"limit": 1},
            headers={"Authorization": f"Bearer {rt.settings.api_key()}"}, timeout=timeout,
            allow_redirects=False,
        )
        if answer.status_code in (401, 403):
            problems.append(f"astria: key refused ({answer.status_code})")
        elif answer.status_code >= 500:
            problems.append(f"astria: {answer.status_code}")
    except AstriaQueueError as exc:
        problems.append(str(exc))
    except requests.RequestException as exc:
        problems.append(f"astria: {type(exc).__name__}")
    if problems:
        say("UNHEALTHY " + "; ".join(problems), {"ok": False, "problems": problems})
        sys.exit(1)
    stale = report.problems()
    say(f"OK redis, {len(replies)} worker(s), {len(report.engines.fresh)} engine(s) beating, "
        "astria key accepted" + (f" ({'; '.join(stale)})" if stale else ""),
        {"ok": True, "workers": len(replies), "engines": len(report.engines.fresh),
         "notes": stale})


with_json(main)


