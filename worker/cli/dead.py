"""`astria-queue dead ...`, `astria-queue webhooks ...` and `astria-queue copies ...`: what
failed, kept for an operator.

Failed jobs (`dead list | redrive`), broker messages that could not be read (`dead messages
list | redrive | purge`, `worker.broker.intake`) and webhooks whose deliveries ran out
(`webhooks list | redrive`), and jobs whose durable copies ran out (`copies list | redrive`).
Each list prints JSON lines, newest first; each redrive `id: result` lines (JSON lines with
--json). A redrive or purge takes the ids named, or with --all every dead one (none: nothing to
do).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

import click

from worker.cli.output import said_each, say

#: At most this many dead letters of one kind are taken by `--all` (failed jobs, each loaded
#: whole: EVERY_JOB).
EVERY, EVERY_JOB = 100_000, 10_000


def chosen(ids: tuple[str, ...], every: bool, dead_ids: Callable[[], Iterable[str]],
           what: str) -> list[str]:
    """The ids a redrive or purge acts on: those named, or with `--all` every dead one (none
    dead: nothing to do); neither is a usage error naming `what`."""
    if every:
        return list(dead_ids())
    if not ids:
        raise click.UsageError(f"name {what} ids or pass --all")
    return list(ids)


@click.group()
def dead() -> None:
    """Dead letters: failed jobs (list, redrive) and broker messages that could not be read
    (`dead messages`)."""


@dead.command("list")
@click.option("--limit", type=int, default=100, show_default=True)
def dead_list(limit: int) -> None:
    """Failed jobs, newest first, with their spec, reason and attempts (JSON lines)."""
    from worker.records import Failed
    from worker.runtime import runtime

    for job in runtime().jobs.dead_jobs(limit):
        failed = job.outcome if isinstance(job.outcome, Failed) else None
        click.echo(json.dumps({
            "job_id": job.id, "spec": job.spec, "tenant": job.tenant,
            "reason": failed.message if failed else None,
            "error": failed.error if failed else None,
            "post_attempts": job.post_attempts, "prompt_id": job.prompt_id,
        }))


@dead.command("redrive")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "redrive_all", is_flag=True, help="Re-drive every dead job.")
def dead_redrive(job_ids: tuple[str, ...], redrive_all: bool) -> None:
    """Put failed jobs back to work under the same job id, without duplicating their prompt."""
    from worker.runtime import runtime

    jobs = runtime().jobs
    ids = chosen(job_ids, redrive_all, lambda: (job.id for job in jobs.dead_jobs(EVERY_JOB)),
                 "job")
    # PENDING again until its new outcome
    said_each({job_id: jobs.redrive(job_id) for job_id in ids}, key="job_id")


@dead.group("messages")
def dead_messages() -> None:
    """Broker messages that could not be read: list, send again, purge."""


@dead_messages.command("list")
@click.option("--limit", type=int, default=100, show_default=True)
def dead_messages_list(limit: int) -> None:
    """Dead messages, newest first (JSON lines): id, reason, queue, task id, size, and the
    message itself (its first 64 KiB)."""
    from worker.runtime import runtime

    for entry in runtime().dead_messages.newest(limit):
        click.echo(json.dumps({"id": entry.id, "reason": entry.reason, "queue": entry.queue,
                               "task_id": entry.task_id or None, "bytes": entry.size,
                               "truncated": entry.truncated,
                               "message": entry.raw.decode(errors="replace")}))


def _dead_message_ids(ids: tuple[str, ...], every: bool) -> list[str]:
    from worker.runtime import runtime

    return chosen(ids, every, lambda: (e.id for e in runtime().dead_messages.newest(EVERY)),
                  "dead message")


@dead_messages.command("redrive")
@click.argument("ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every dead message.")
def dead_messages_redrive(ids: tuple[str, ...], every: bool) -> None:
    """Push dead messages back onto the queue they came from (once the cause is fixed: one
    that still cannot be read comes back here)."""
    from worker.runtime import runtime

    store = runtime().dead_messages
    said_each({entry_id: store.redrive(entry_id) for entry_id in _dead_message_ids(ids, every)})


@dead_messages.command("purge")
@click.argument("ids", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every dead message.")
def dead_messages_purge(ids: tuple[str, ...], every: bool) -> None:
    """Delete dead messages for good."""
    from worker.runtime import runtime

    purged = runtime().dead_messages.purge(_dead_message_ids(ids, every))
    say(f"{purged} purged", {"purged": purged})


@click.group()
def webhooks() -> None:
    """Webhooks to producers whose deliveries ran out: list them, send them again."""


@webhooks.command("list")
@click.option("--limit", type=int, default=100, show_default=True)
def webhooks_list(limit: int) -> None:
    """Dead webhooks, newest first (JSON lines): id, job, URL, attempts, last error."""
    from dataclasses import asdict

    from worker.runtime import runtime

    for hook in runtime().webhooks.dead(limit):
        click.echo(json.dumps(asdict(hook)))


@webhooks.command("redrive")
@click.argument("webhook_ids", nargs=-1)
@click.option("--all", "redrive_all", is_flag=True, help="Re-send every dead webhook.")
def webhooks_redrive(webhook_ids: tuple[str, ...], redrive_all: bool) -> None:
    """Send dead webhooks again, under the same webhook-id and body."""
    from worker.runtime import runtime

    store = runtime().webhooks
    ids = chosen(webhook_ids, redrive_all, lambda: (h.webhook_id for h in store.dead(EVERY)),
                 "webhook")
    said_each({message_id: store.redrive(message_id) for message_id in ids}, key="webhook_id")


@click.group()
def copies() -> None:
    """Jobs whose durable copies (STORAGE_URL) ran out of attempts: list them, copy again."""


@copies.command("list")
@click.option("--limit", type=int, default=100, show_default=True)
def copies_list(limit: int) -> None:
    """Dead copies, newest first (JSON lines): job, attempts, last error."""
    from dataclasses import asdict

    from worker.runtime import runtime

    for dead_copy in runtime().copies.dead(limit):
        click.echo(json.dumps(asdict(dead_copy)))


@copies.command("redrive")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "redrive_all", is_flag=True, help="Copy every dead letter again.")
def copies_redrive(job_ids: tuple[str, ...], redrive_all: bool) -> None:
    """Copy the images of these jobs again, with a fresh count of attempts."""
    from worker.runtime import runtime

    store = runtime().copies
    ids = chosen(job_ids, redrive_all, lambda: (c.job_id for c in store.dead(EVERY)), "job")
    said_each({job_id: "redriven" if store.redrive(job_id) else "not a dead copy"
               for job_id in ids}, key="job_id")


COMMANDS = (dead, webhooks, copies)
