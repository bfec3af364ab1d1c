"""Batches, the producer's side of them: check every member before anything is stored, then
create the batch with its members' ids (`worker.store.batches`). Sending the members is the
caller's (the producer library through the broker, the HTTP API straight into the store); the
same batch id with the same specs resumes an interrupted send, since each member's id is fixed
by its place."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from worker.errors import InvalidSpec
from worker.flow.accept import check
from worker.runtime import Runtime
from worker.spec import BATCH_ID, BATCH_ID_RULE, PromptSpec
from worker.store.batches import BatchCreated

#: The problems an InvalidSpec of a batch names, at most.
MAX_PROBLEMS = 10


@dataclass(frozen=True)
class OpenBatch:
    """A created batch, its members to send: `specs[n]` is job `job_ids[n]`."""

    id: str
    tenant: str
    job_ids: list[str]
    specs: list[PromptSpec]


def open_batch(rt: Runtime, specs: Sequence[Mapping[str, Any]], *, callback: str | None = None,
               batch_id: str | None = None) -> OpenBatch:
    """Check every spec (`check`, as `enqueue` does; one tenant for all) and the batch's
    callback, then create the batch; InvalidSpec naming each bad member (`specs[n].field`)
    and nothing stored, or a batch id taken by another batch."""
    batch_id = batch_id or uuid.uuid4().hex
    if not BATCH_ID.fullmatch(batch_id):
        raise InvalidSpec(f"batch_id: {BATCH_ID_RULE}")
    limit = rt.settings.max_batch_size
    if not 1 <= len(specs) <= limit:
        raise InvalidSpec(f"specs: 1 to {limit} specs (MAX_BATCH_SIZE), not {len(specs)}")
    parsed, problems = [], []
    for n, raw in enumerate(specs):
        try:
            parsed.append(check(rt, raw))
        except InvalidSpec as exc:
            problems.append(f"specs[{n}].{exc}")
    if callback and parsed and not problems:  # by the rules of a spec's, with a member's tenant
        try:
            check(rt, {**specs[0], "callback": callback})
        except InvalidSpec as exc:
            problems.append(str(exc))
    tenants = sorted({spec.tenant for spec in parsed})
    if len(tenants) > 1:
        problems.append(f"specs: every member of a batch is of one tenant, not {tenants[:5]}")
    if problems:
        more = f" (and {len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
        raise InvalidSpec("; ".join(problems[:MAX_PROBLEMS]) + more)
    tenant = parsed[0].tenant
    if rt.batches.create(batch_id, tenant, len(parsed), callback) is BatchCreated.CONFLICT:
        raise InvalidSpec(f"batch_id: {batch_id!r} is another batch's (another tenant's, or "
                          "other specs or callback)")
    return OpenBatch(batch_id, tenant, rt.batches.member_ids(batch_id, len(parsed)), parsed)


def cancel_batch(rt: Runtime, batch_id: str, *, delete_prompt: bool = False) -> dict[str, str]:
    """Cancel every member of the batch that has no outcome (one not arrived yet is refused when
    it does); job id -> what the cancel said (its state after it)."""
    return {job_id: rt.jobs.cancel(job_id, delete_prompt=delete_prompt)
            for job_id in rt.batches.members(batch_id)}
