"""`astria-queue jobs list`, `status` and `probe`: a job's record, jobs by state, tenant and
lane, and this host's checks for a container's probes. Registered on the main group by
`worker.cli`."""

from __future__ import annotations

import sys

import click

from worker.cli.output import CommandFailed, print_json, say
from worker.records import JobState, Lane


@click.group()
def jobs() -> None:
    """Jobs in the job store."""


@jobs.command("list")
@click.option("--state",
              type=click.Choice([s.value for s in JobState if s is not JobState.MISSING]))
@click.option("--tenant")
@click.option("--lane", type=click.Choice([lane.value for lane in Lane]))
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
def jobs_list(state: str | None, tenant: str | None, lane: str | None, limit: int) -> None:
    """One JSON line per job that matches (a SCAN of the store: for people, not scripts in a
    loop)."""
    from worker.flow.view import job_view
    from worker.runtime import runtime

    rt = runtime()
    for job in rt.search.find(state=JobState(state) if state else None, tenant=tenant,
                              lane=lane, limit=limit):
        click.echo(job_view(rt, job).model_dump_json())


#: `astria-queue status` exits with these (click's own usage errors exit 2).
STATUS_EXIT = {"SUCCESS": 0, "FAILURE": 1, "REVOKED": 3, "MISSING": 4, "UNDECIDED": 5}


@click.command()
@click.argument("job_id")
def status(job_id: str) -> None:
    """Show a job's record and outcome, from the job store. Exit code: 0 succeeded, 1 failed,
    3 revoked, 4 no such job (never registered, or past JOB_RETENTION_SECONDS), 5 not decided
    yet."""
    from worker.flow.view import job_view
    from worker.runtime import runtime

    rt = runtime()
    job = rt.jobs.load(job_id)
    if job.status is JobState.MISSING:
        print_json({"id": job_id, "state": JobState.MISSING})
        sys.exit(STATUS_EXIT["MISSING"])
    view = job_view(rt, job)
    print_json(view.model_dump(mode="json"))
    sys.exit(STATUS_EXIT[view.outcome["state"] if view.outcome else "UNDECIDED"])


@click.command()
@click.argument("what", type=click.Choice(["ready", "alive"]))
def probe(what: str) -> None:
    """For a container's probes, cheap and local (no Astria request, no broadcast): `ready`,
    Redis answers; `alive`, an engine on this host beat within 30 s. Exit code 0 or 1."""
    import socket
    import time

    from worker.constants import Keys
    from worker.settings import get_settings
    from worker.store.connections import redis_client
    from worker.store.engines import EngineRegistry

    settings = get_settings()
    client = redis_client(settings, patient=False)
    try:
        ok = bool(client.ping()) if what == "ready" else EngineRegistry(
            client, Keys(settings.key_prefix)).beating_on(socket.gethostname(), time.time())
    except Exception as exc:
        raise CommandFailed(f"{what}: {type(exc).__name__}") from None
    if not ok:
        raise CommandFailed(f"{what}: no engine on this host beat within 30 s")
    say(f"{what}: ok", {"probe": what, "ok": True})


COMMANDS = (jobs, status, probe)
