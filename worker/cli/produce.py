"""`astria-queue enqueue`, `batch` and `cancel`: what a producer does, from a shell."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from worker.cli.output import CommandFailed, json_wanted, said_each, say
from worker.errors import AstriaQueueError


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


@click.command()
@click.argument("spec")
@click.option("--wait", is_flag=True, help="Wait for the outcome and print it.")
@click.option("--timeout", type=float, default=1200.0, show_default=True)
def enqueue(spec: str, wait: bool, timeout: float) -> None:
    """Validate and enqueue SPEC (JSON, @file or - for stdin); print the job id (with --json,
    `{"job_id"}`, and its `outcome` with --wait)."""
    from worker.producer import enqueue as enqueue_spec
    from worker.producer import outcome

    try:
        job_id = enqueue_spec(_load_spec(spec))
    except AstriaQueueError as exc:
        raise CommandFailed(f"{type(exc).__name__}: {exc}") from None
    if not wait:
        say(job_id, {"job_id": job_id})
        return
    if not json_wanted():
        click.echo(job_id)
    try:
        result = outcome(job_id, timeout=timeout)
    except Exception as exc:
        raise CommandFailed(f"{type(exc).__name__}: {exc}") from None
    say(json.dumps(result, indent=2, default=str), {"job_id": job_id, "outcome": result})


def _read_specs(specs: Path) -> tuple[list[tuple[int, Any]], list[str]]:
    """The file's valid specs (line number, spec) and what is wrong with the others."""
    from worker.errors import InvalidSpec
    from worker.producer import check_spec

    valid, bad = [], []
    for number, line in enumerate(specs.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            check_spec(data)
            valid.append((number, data))
        except (ValueError, InvalidSpec) as exc:
            bad.append(f"line {number}: {exc}")
    return valid, bad


@click.command()
@click.argument("specs", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write outcomes as JSON lines here (default: SPECS with .out.jsonl).")
@click.option("--dry-run", is_flag=True, help="Validate every line; enqueue nothing.")
@click.option("--timeout", type=float, default=1800.0, show_default=True)
@click.option("--batch-id", "--resume", "batch_id",
              help="The batch's id (default: a new one). The same id and file again resume an "
                   "interrupted run: nothing is sent twice.")
@click.option("--callback", help="Where the batch's one batch.completed webhook goes.")
def batch(specs: Path, out: Path | None, dry_run: bool, timeout: float, batch_id: str | None,
          callback: str | None) -> None:
    """Enqueue a JSONL file of specs as one batch, show progress, write the outcomes as JSONL
    (with --json: a `batch` line first, a `done` line last, no progress bar)."""
    from worker.errors import InvalidSpec
    from worker.producer import enqueue_batch, job_result

    valid, bad = _read_specs(specs)
    if dry_run or bad:
        for problem in bad:
            click.echo(problem, err=True)
        say(f"{len(valid)} valid, {len(bad)} invalid" + ("" if dry_run else
            "; nothing enqueued: fix the lines above or remove them"),
            {"valid": len(valid), "invalid": bad, "enqueued": 0})
        sys.exit(1 if bad else 0)
    try:
        opened = enqueue_batch([spec for _, spec in valid], callback=callback, batch_id=batch_id)
    except InvalidSpec as exc:
        raise CommandFailed(str(exc)) from None
    say(f"batch {opened.id}: {len(valid)} jobs (resume with --batch-id {opened.id})",
        {"batch_id": opened.id, "jobs": len(valid)})
    jobs = [(n, job_id) for (n, _), job_id in zip(valid, opened.job_ids, strict=True)]
    target = out or specs.with_suffix(".out.jsonl")
    pending = dict(jobs)
    deadline = time.monotonic() + timeout
    failed = 0
    with target.open("w") as sink, click.progressbar(
            length=len(jobs), label="jobs", file=sys.stderr if json_wanted() else None) as bar:
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
    succeeded = len(jobs) - len(pending) - failed
    say(f"{succeeded} succeeded, {failed} failed, {len(pending)} unfinished; outcomes in "
        f"{target}", {"batch_id": opened.id, "succeeded": succeeded, "failed": failed,
                      "unfinished": len(pending), "out": str(target)})
    sys.exit(1 if failed or pending else 0)


@click.command()
@click.argument("job_ids", nargs=-1)
@click.option("--tenant", help="Cancel every job of this tenant that has no outcome yet.")
@click.option("--batch", "batch_id", help="Cancel every member of this batch without an outcome.")
@click.option("--delete-prompt", is_flag=True,
              help="Also delete a prompt the job created, at Astria.")
def cancel(job_ids: tuple[str, ...], tenant: str | None, batch_id: str | None,
           delete_prompt: bool) -> None:
    """Cancel jobs: not yet sent, never sent; waiting, stop polling; the outcome is REVOKED.
    Prints what each job said (`{"job_id", "result"}` lines with --json)."""
    from worker.producer import cancel as cancel_job
    from worker.producer import cancel_batch, cancel_tenant

    if sum(map(bool, (job_ids, tenant, batch_id))) != 1:
        raise click.UsageError("name job ids, or --tenant, or --batch")
    if tenant or batch_id:
        answers = (cancel_tenant(tenant, delete_prompt=delete_prompt) if tenant
                   else cancel_batch(str(batch_id), delete_prompt=delete_prompt))
    else:
        answers = {job_id: cancel_job(job_id, delete_prompt=delete_prompt) for job_id in job_ids}
    said_each(answers, key="job_id")
    if (tenant or batch_id) and not json_wanted():
        click.echo(f"{sum(a == 'revoked' for a in answers.values())} job(s) of "
                   f"{tenant or 'batch ' + str(batch_id)} revoked")


COMMANDS = (enqueue, batch, cancel)
