"""Intake: what a broker message must be before kombu and Celery may read it.

The queue is a Redis list anyone with the URL can push to. kombu and Celery assume a well-formed
message: `not json`, an envelope without `properties`, a body that is not base64, or headers with
a task name and no id make them raise inside the consumer, and the worker exits ("Unrecoverable
error"); since the loss-proof transport puts the message back, every worker that takes it dies
too. So the transport (`worker.broker.transport`) checks each message first with `problem()`, and a
message that fails is moved once to the dead messages (`worker.store.messages`) with its reason,
logged once, and never delivered. When its task id can be read, that job ends in FAILURE with an
InvalidMessage, so a producer waiting on it gets an answer.

A message passes when it is kombu's JSON envelope and, on the task queue (control replies go
through the same transport), Celery's protocol 2 (or 1):
- at most MAX_MESSAGE_BYTES, a JSON object;
- `properties`: `delivery_tag` (a string), `delivery_info` with `exchange` and `routing_key`,
  `body_encoding` base64 or none;
- `content-type` application/json, `content-encoding` utf-8 or none;
- protocol 2: headers with `task` and `id` (printable, at most 255 characters), a body
  `[args, kwargs, embed]`; protocol 1: a body object with `task`, `id`, `args`, `kwargs`;
- no ETA (`countdown`/`eta`): Celery would hold the message in the worker's memory until then;
  a job's `expires_in` (or Celery's `expires`) is how a producer bounds its wait. `expires`,
  `timelimit`, `retries` and the string headers have the types Celery expects.
What the arguments themselves are is the task's to judge (`worker.flow.accept`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: Largest message read: a spec with a 4 MiB inline image is about 5.6 MiB on the queue.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
TASK_ID = re.compile(r"^[!-~]{1,255}$")
_STRING_HEADERS = ("lang", "shadow", "group", "root_id", "parent_id", "argsrepr", "kwargsrepr",
                   "origin")


@dataclass(frozen=True)
class Rejected:
    """Why a message cannot be read, and its task id when one could be read."""

    reason: str
    task_id: str | None


class _Bad(Exception):
    pass


def _need(condition: bool, reason: str) -> None:
    if not condition:
        raise _Bad(reason)


def _object(value: Any, name: str) -> dict[str, Any]:
    _need(isinstance(value, dict), f"{name}: must be a JSON object")
    return value  # type: ignore[no-any-return]


def problem(raw: bytes, *, task: bool = True) -> Rejected | None:
    """None when the message may be delivered, else why not (see the module docstring);
    `task`: the message is on a task queue (not a control reply)."""
    task_id: str | None = None
    try:
        _need(len(raw) <= MAX_MESSAGE_BYTES,
              f"message: {len(raw)} bytes, more than {MAX_MESSAGE_BYTES}")
        try:
            envelope = json.loads(raw)
        except (ValueError, RecursionError):
            raise _Bad("message: not JSON") from None
        envelope = _object(envelope, "message")
        headers = envelope.get("headers") or {}
        headers = _object(headers, "headers")
        if isinstance(headers.get("id"), str) and TASK_ID.match(headers["id"]):
            task_id = headers["id"]
        body = _check_envelope(envelope)
        if not task:
            return None
        if "task" in headers:
            _check_protocol_2(headers, body)
        else:
            if isinstance(body, dict) and isinstance(body.get("id"), str):
                task_id = body["id"] if TASK_ID.match(body["id"]) else None
            _check_protocol_1(body)
    except _Bad as exc:
        return Rejected(str(exc), task_id)
    return None


def _check_envelope(envelope: dict[str, Any]) -> Any:
    """The envelope kombu reads; returns the decoded body."""
    properties = _object(envelope.get("properties"), "properties")
    _need(isinstance(properties.get("delivery_tag"), str),
          "properties.delivery_tag: must be a string")
    info = _object(properties.get("delivery_info"), "properties.delivery_info")
    _need(isinstance(info.get("exchange"), str) and isinstance(info.get("routing_key"), str),
          "properties.delivery_info: needs exchange and routing_key strings")
    _need(properties.get("priority") is None or type(properties["priority"]) is int,
          "properties.priority: must be an integer")
    encoding = properties.get("body_encoding")
    _need(encoding in (None, "base64"), f"properties.body_encoding: {str(encoding)[:40]!r} "
                                        "is not base64")
    _need(envelope.get("content-type") == "application/json",
          "content-type: must be application/json (JSON only is accepted)")
    _need(envelope.get("content-encoding") in (None, "utf-8"),
          "content-encoding: must be utf-8")
    body = envelope.get("body")
    if not isinstance(body, str):
        raise _Bad("body: must be a string")
    try:
        text = base64.b64decode(body, validate=True) if encoding == "base64" else body.encode()
        return json.loads(text)
    except (binascii.Error, ValueError, RecursionError):
        raise _Bad(f"body: not {'base64 of ' if encoding else ''}JSON") from None


def _check_protocol_2(headers: dict[str, Any], body: Any) -> None:
    _need(isinstance(headers["task"], str) and 0 < len(headers["task"]) <= 200,
          "headers.task: must be a task name")
    _need(isinstance(headers.get("id"), str) and bool(TASK_ID.match(headers["id"])),
          "headers.id: must be 1-255 printable characters without spaces")
    _check_options(headers, "headers")
    for name in _STRING_HEADERS:
        _need(headers.get(name) is None or isinstance(headers[name], str),
              f"headers.{name}: must be a string")
    _need(headers.get("retries") is None or type(headers["retries"]) is int,
          "headers.retries: must be an integer")
    _need(headers.get("ignore_result") is None or isinstance(headers["ignore_result"], bool),
          "headers.ignore_result: must be true or false")
    limits = headers.get("timelimit")
    _need(limits is None or (isinstance(limits, list) and len(limits) == 2 and all(
        x is None or type(x) in (int, float) for x in limits)),
          "headers.timelimit: must be [hard, soft] seconds or nulls")
    _need(isinstance(body, list) and len(body) == 3 and isinstance(body[0], list)
          and isinstance(body[1], dict) and (body[2] is None or isinstance(body[2], dict)),
          "body: must be [args, kwargs, embed] (Celery's protocol 2)")


def _check_protocol_1(body: Any) -> None:
    body = _object(body, "body")
    _need(isinstance(body.get("task"), str) and bool(body["task"]),
          "headers.task: missing (and the body is not Celery's protocol 1 either)")
    _need(isinstance(body.get("id"), str) and bool(TASK_ID.match(body["id"])),
          "body.id: must be 1-255 printable characters without spaces")
    _need(isinstance(body.get("args", []), list) and isinstance(body.get("kwargs", {}), dict),
          "body: args must be a list and kwargs an object")
    _check_options(body, "body")


def _check_options(values: dict[str, Any], where: str) -> None:
    _need(values.get("eta") is None, f"{where}.eta: an ETA or countdown is not supported "
                                     "(use the spec's expires_in, or Celery's expires)")
    expires = values.get("expires")
    if expires is not None:
        try:
            datetime.fromisoformat(expires)
        except (TypeError, ValueError):
            raise _Bad(f"{where}.expires: must be an ISO 8601 date and time") from None
