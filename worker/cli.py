"""`astria-queue`: enqueue specs, look at jobs and dead letters, run the simulator or the demo."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from worker import cli_dead as dead_letters
from worker import cli_jobs as job_commands
from worker.errors import AstriaQueueError

if TYPE_CHECKING:
    from astria_local.sim_limit import Counter


def _load_spec(value: str) -> Any:
    if value == "-":
        text = sys.stdin.read()
    elif value.startswith("@"):
        text = Path(value[1:]).read_text(encoding="utf-8")
    else:
        text = value
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group()
@click.version_option(package_name="astria-queue", prog_name="astria-queue")
@click.option("--redis-url", envvar="REDIS_URL", help="Redis, in kombu's URL forms (REDIS_URL).")
def main(redis_url: str | None) -> None:
    """Astria job queue: configuration comes from the environment (see README)."""
    if redis_url:
        os.environ["REDIS_URL"] = redis_url  # read when a command first needs the settings


main.add_command(dead_letters.dead)
main.add_command(dead_letters.webhooks)
main.add_command(dead_letters.copies)
main.add_command(job_commands.jobs)
main.add_command(job_commands.status)
main.add_command(job_commands.probe)


@main.command()
@click.argument("spec")
@click.option("--wait", is_flag=True, help="Wait for the outcome and print it.")
@click.option("--timeout", type=float, default=1200.0, show_default=True)
def enqueue(spec: str, wait: bool, timeout: float) -> None:
    """Validate and enqueue SPEC (JSON, @file or - for stdin); print the job id."""
    from worker.producer import enqueue as enqueue_spec
    from worker.producer import outcome

    try:
        job_id = enqueue_spec(_load_spec(spec))
    except AstriaQueueError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    click.echo(job_id)
    if wait:
        try:
            _print_json(outcome(job_id, timeout=timeout))
        except Exception as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None


@main.command()
@click.option("--of", "name", type=click.Choice(["spec", "outcome", "failure", "webhook-event"]),
              default="spec", show_default=True)
def schema(name: str) -> None:
    """Print a JSON Schema: of a spec (schema/prompt-spec.schema.json), or of what we send
    (schema/NAME.schema.json)."""
    from worker.flow.shapes import schemas
    from worker.spec import spec_json_schema

    _print_json(spec_json_schema() if name == "spec" else schemas()[name])


@main.command()
def openapi() -> None:
    """Print the HTTP API's OpenAPI document (also in schema/openapi.json)."""
    from worker.edge.api import create_app
    from worker.runtime import runtime

    _print_json(create_app(runtime()).openapi())


@main.command()
def stats() -> None:
    """Counts by state, per tenant and lane (in flight, latency, cost), requests by status."""
    from worker.runtime import runtime

    _print_json(runtime().stats.snapshot())


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
        click.echo("UNHEALTHY " + "; ".join(problems))
        sys.exit(1)
    stale = "; ".join(report.problems())
    click.echo(f"OK redis, {len(replies)} worker(s), {len(report.engines.fresh)} engine(s) "
               f"beating, astria key accepted" + (f" ({stale})" if stale else ""))


@main.command()
@click.argument("specs", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write outcomes as JSON lines here (default: SPECS with .out.jsonl).")
@click.option("--dry-run", is_flag=True, help="Validate every line; enqueue nothing.")
@click.option("--timeout", type=float, default=1800.0, show_default=True)
@click.option("--batch-id", help="The batch's id (default: a new one). The same id and file "
              "again resume an interrupted run: nothing is sent twice.")
@click.option("--callback", help="Where the batch's one batch.completed webhook goes.")
def batch(specs: Path, out: Path | None, dry_run: bool, timeout: float, batch_id: str | None,
          callback: str | None) -> None:
    """Enqueue a JSONL file of specs as one batch, show progress, write the outcomes as JSONL."""
    import time

    from worker.errors import InvalidSpec
    from worker.producer import check_spec, enqueue_batch, job_result

    lines = [(n, line) for n, line in enumerate(specs.read_text().splitlines(), 1) if line.strip()]
    valid, bad = [], []
    for number, line in lines:
        try:
            data = json.loads(line)
            check_spec(data)
            valid.append((number, data))
        except (ValueError, InvalidSpec) as exc:
            bad.append(f"line {number}: {exc}")
    for problem in bad:
        click.echo(problem, err=True)
    if dry_run or bad:
        click.echo(f"{len(valid)} valid, {len(bad)} invalid" + ("" if dry_run else
                   "; nothing enqueued: fix the lines above or remove them"))
        sys.exit(1 if bad else 0)
    try:
        opened = enqueue_batch([spec for _, spec in valid], callback=callback, batch_id=batch_id)
    except InvalidSpec as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"batch {opened.id}: {len(valid)} jobs (resume with --batch-id {opened.id})")
    jobs = [(n, job_id) for (n, _), job_id in zip(valid, opened.job_ids, strict=True)]
    target = out or specs.with_suffix(".out.jsonl")
    pending = dict(jobs)
    deadline = time.monotonic() + timeout
    failed = 0
    with target.open("w") as sink, click.progressbar(length=len(jobs), label="jobs") as bar:
        while pending and time.monotonic() < deadline:
            for number, job_id in list(pending.items()):
                result = job_result(job_id)
                if not result.ready():
                    continue
                entry: dict[str, Any] = {"line": number, "job_id": job_id, "state": result.state}
                if result.successful():
                    entry["outcome"] = result.result
                else:
                    failed += 1
                    entry["error"] = {"type": type(result.result).__name__,
                                      "message": str(result.result)}
                sink.write(json.dumps(entry) + "\n")
                del pending[number]
                bar.update(1)
            time.sleep(0.5)
    click.echo(f"{len(jobs) - len(pending) - failed} succeeded, {failed} failed, "
               f"{len(pending)} unfinished; outcomes in {target}")
    sys.exit(1 if failed or pending else 0)


@main.command()
@click.argument("job_ids", nargs=-1)
@click.option("--tenant", help="Cancel every job of this tenant that has no outcome yet.")
@click.option("--batch", "batch_id", help="Cancel every member of this batch without an outcome.")
@click.option("--delete-prompt", is_flag=True,
              help="Also delete a prompt the job created, at Astria.")
def cancel(job_ids: tuple[str, ...], tenant: str | None, batch_id: str | None,
           delete_prompt: bool) -> None:
    """Cancel jobs: not yet sent, never sent; waiting, stop polling; the outcome is REVOKED."""
    from worker.producer import cancel as cancel_job
    from worker.producer import cancel_batch, cancel_tenant

    if sum(map(bool, (job_ids, tenant, batch_id))) != 1:
        raise click.UsageError("name job ids, or --tenant, or --batch")
    if tenant or batch_id:
        answers = (cancel_tenant(tenant, delete_prompt=delete_prompt) if tenant
                   else cancel_batch(str(batch_id), delete_prompt=delete_prompt))
    else:
        answers = {job_id: cancel_job(job_id, delete_prompt=delete_prompt) for job_id in job_ids}
    for job_id, answer in answers.items():
        click.echo(f"{job_id}: {answer}")
    if tenant or batch_id:
        click.echo(f"{sum(a == 'revoked' for a in answers.values())} job(s) of "
                   f"{tenant or 'batch ' + str(batch_id)} revoked")


@main.command()
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
    click.echo(f"metrics on http://{host}:{server.server_port}/metrics")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


@main.command()
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
    click.echo(f"Astria simulator on {sim.url} (Ctrl-C to stop)")
    with contextlib.suppress(KeyboardInterrupt):
        sim.serve_forever()


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--host", default="0.0.0.0", show_default=True, envvar="CALLBACK_HOST")
@click.option("--port", type=int, default=8080, show_default=True, envvar="CALLBACK_PORT")
def callbacks(host: str, port: int) -> None:
    """The receiver of Astria's callbacks (also /healthz and /metrics), served by gunicorn."""
    run_receiver(host, port)


def run_receiver(host: str, port: int) -> None:
    """Exec gunicorn with the receiver's settings: the Procfile's own command."""
    os.environ.update(CALLBACK_HOST=host, CALLBACK_PORT=str(port))
    args = ["gunicorn", "-c", "python:worker.edge.gunicorn_conf", "worker.edge.receiver:app"]
    os.execvp(sys.executable, [sys.executable, "-m", *args])


@main.command()
def api() -> None:
    """The HTTP API for producers (API_HOST:API_PORT), served by uvicorn."""
    import uvicorn

    from worker.logs import configure
    from worker.runtime import runtime

    s = runtime().settings
    configure()  # uvicorn's loggers propagate to ours (log_config=None)
    uvicorn.run("worker.edge.api:create_app", factory=True, host=s.api_host, port=s.api_port,
                proxy_headers=False, server_header=False, log_config=None)


@main.command()
@click.option("--timeout", type=float, default=300.0, show_default=True)
def demo(timeout: float) -> None:
    """Run the main job end to end (throwaway Redis and simulator when not configured)."""
    from astria_local.demo import run_demo

    try:
        code = run_demo(timeout)
    except AstriaQueueError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


if __name__ == "__main__":
    main()
