"""Durable copies: each image of a succeeded job copied to STORAGE_URL (or its tenant's own
`storage_url`, TENANTS_FILE), exactly once.

Astria deletes generated images 30 days after the tune's training, so an outcome's image URLs
do not last. With STORAGE_URL set, the script that decides a success also makes the job due for
its copies (finish.lua), so no success is left uncopied; the dispatcher grants copies to their
own STORAGE_CONCURRENCY threads (grant_copies.lua), so a slow store never takes a thread from
Astria's requests or the webhooks.

One attempt copies every image of the job: image n of job J of tenant T goes to
`T/J/n<.ext>` (characters outside [A-Za-z0-9_-] of the job id %-escaped), so an attempt redone
after a crash writes the same objects: an object already there whole (its sha256 beside it) is
kept, not written again; a written one is read back and must match the sha256 and size of what
was downloaded. Then `stored` (url, key, sha256, bytes, content_type of each) is recorded on the
job and its `stored` event appended (a `job.stored` webhook when the job has a callback; the
API's job view and event stream). An attempt that fails is retried with back-off
(5 s, doubling, at most 10 min), STORAGE_COPY_ATTEMPTS times, then the job's copies are a dead
letter: `astria-queue copies list | redrive`. The job's outcome itself does not wait for them.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from typing import Any
from urllib.parse import urlsplit

import requests

from worker.errors import AstriaQueueError
from worker.net.addresses import resolved_problem
from worker.net.storage import Storage, StoredObject, sha256_hex
from worker.net.tracing import note
from worker.records import Job, Succeeded
from worker.runtime import Runtime
from worker.store.copies import Copied

log = logging.getLogger("astria.copies")
FIRST_RETRY_SECONDS, MAX_RETRY_SECONDS = 5.0, 600.0
#: Seconds to connect to an image's host, and between two reads of its bytes.
CONNECT_SECONDS, READ_SECONDS = 5.0, 30.0
_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif"})
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


class CopyFailed(AstriaQueueError):
    """An image could not be copied (this attempt)."""


def object_key(tenant: str, job_id: str, index: int, url: str) -> str:
    """Where image `index` of the job goes: the same for every attempt."""
    suffix = re.search(r"\.[A-Za-z]{3,4}$", urlsplit(url).path)
    ext = suffix.group().lower() if suffix and suffix.group().lower() in _EXTENSIONS else ""
    safe_id = _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), job_id)
    return f"{tenant}/{safe_id}/{index}{ext}"


def download(url: str, limit: int, *, allow_private: bool, astria: str = "") -> tuple[bytes, str]:
    """The image's bytes (at most `limit`) and content type. An image URL comes from Astria's
    answer, which is checked like anything from outside: unless WEBHOOK_ALLOW_PRIVATE_ADDRESSES,
    or it is on the host of ASTRIA_BASE_URL (`astria`) itself, its host must resolve to public
    addresses only (as a webhook's must), so an answer cannot turn a worker on an internal
    service."""
    trusted = allow_private or urlsplit(url).netloc == urlsplit(astria).netloc
    if not trusted and (problem := resolved_problem(url)):
        raise CopyFailed(f"image {urlsplit(url).netloc}: {problem}")
    try:
        with requests.get(url, stream=True, timeout=(CONNECT_SECONDS, READ_SECONDS),
                          allow_redirects=False) as answer:
            if answer.status_code != 200:
                raise CopyFailed(f"GET {urlsplit(url).netloc}: HTTP {answer.status_code}")
            chunks, size = [], 0
            for chunk in answer.iter_content(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise CopyFailed(f"image larger than {limit} bytes (STORAGE_MAX_IMAGE_BYTES)")
                chunks.append(chunk)
            kind = answer.headers.get("content-type", "").split(";")[0].strip().lower()
    except requests.RequestException as exc:
        raise CopyFailed(f"GET {urlsplit(url).netloc}: {type(exc).__name__}") from None
    return b"".join(chunks), kind if re.fullmatch(r"image/[a-z0-9.+-]{1,40}", kind) else (
        "application/octet-stream")


def copy_one(rt: Runtime, storage: Storage, key: str, url: str) -> StoredObject:
    """One image: kept if it is there whole already, else downloaded, written, checked."""
    found = storage.find(key)
    if found is not None:
        return found
    s = rt.settings
    data, content_type = download(url, s.storage_max_image_bytes, astria=s.astria_base_url,
                                  allow_private=s.webhook_allow_private_addresses)
    storage.put(key, data, content_type)
    written = storage.find(key)
    if written is None or (written.sha256, written.bytes) != (sha256_hex(data), len(data)):
        raise CopyFailed(f"{key}: what was written does not match what was read")
    return written


def copy(rt: Runtime, job_id: str) -> None:
    """Copy the job's images (see the module docstring) and record how it went: traced, in a
    span of its job's trace."""
    job = rt.jobs.load(job_id)
    with rt.tracing.spans("astria_queue.copy", [(job.id, job.traceparent)]):
        _copy(rt, job)


def _copy(rt: Runtime, job: Job) -> None:
    job_id = job.id
    if job.stored or not isinstance(job.outcome, Succeeded):  # done, or nothing to copy
        rt.copies.done(job_id, Copied.STORED, stored=json.loads(job.stored or "[]"))
        return
    images: list[str] = list(job.outcome.result.get("images") or [])
    ends = time.monotonic() + rt.settings.storage_lease_seconds * 2 / 3  # within its lease
    stored: list[dict[str, Any]] = []
    try:
        for n, url in enumerate(images):
            if time.monotonic() > ends:
                raise CopyFailed(f"{n} of {len(images)} images copied within this attempt's "
                                 "time (STORAGE_LEASE_SECONDS); the rest next time")
            stored.append(copy_one(rt, rt.storage(job.tenant),
                                   object_key(job.tenant, job.id, n, url), url).as_dict())
    except Exception as exc:  # the store, the image's host, the disk: all retried
        attempt = job.copy_attempts + 1
        error = str(exc) if isinstance(exc, CopyFailed) else type(exc).__name__
        note(**{"error.type": type(exc).__name__, "astria_queue.copy_attempt": attempt})
        dead = attempt >= rt.settings.storage_copy_attempts
        delay = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** (attempt - 1))
        rt.copies.done(job_id, Copied.DEAD if dead else Copied.RETRY, error=error,
                       next_at=time.time() + delay * random.uniform(0.8, 1.2))
        log.warning("job %s: copy attempt %d failed (%s)%s", job_id, attempt, error,
                    ": a dead letter" if dead else "", extra=job.log_fields())
        return
    rt.copies.done(job_id, Copied.STORED, stored=stored)
    log.info("job %s: %d image(s) stored", job_id, len(stored), extra=job.log_fields())
