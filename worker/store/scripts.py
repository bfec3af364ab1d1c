"""Lua scripts: one file each under `lua/`, each called through `Script` with keyword arguments.

A script's header names its KEYS and ARGV, one per line, and that header is also its binding:

    -- KEYS[1] job           the job's hash
    -- ARGV[1] job_id
    -- ARGV[2...] fields     (a variable-length tail, passed as a list)

`Script.__call__(keys={"job": ...}, args={"job_id": ..., "fields": [...]})` orders the values by
those names and refuses a missing or unknown one, so no caller can pass arguments in the wrong
order. The script reads them by the same names: a prelude generated from the header binds
`KEY.job`, `ARG.job_id` and `ARG.fields` (the tail, as a list), so no body indexes `KEYS[n]` or
`ARGV[n]` (tests/unit/test_structure.py checks it). `--!include NAME` pulls in a shared piece
from `lua/lib/NAME.lua` (once, however many pieces include it; a piece may include others); a
piece reads the same `KEY` and `ARG` names, which each script that includes it declares.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.exceptions import NoScriptError

log = logging.getLogger("astria.store")
_HEADER = re.compile(r"^--\s+(KEYS|ARGV)\[(\d+)(\.\.\.)?\]\s+(\w+)")
_INCLUDE = re.compile(r"^--!include\s+(\w+)\s*$", re.MULTILINE)
Value = str | int | float | bytes


@dataclass(frozen=True)
class Signature:
    keys: tuple[str, ...]
    args: tuple[str, ...]
    keys_tail: bool  #: the last KEYS name takes a list
    args_tail: bool  #: the last ARGV name takes a list


def _read(path: str) -> str:
    return resources.files("worker.store").joinpath("lua", path).read_text(encoding="utf-8")


def parse_signature(source: str) -> Signature:
    names: dict[str, list[tuple[int, str, bool]]] = {"KEYS": [], "ARGV": []}
    for line in source.splitlines():
        match = _HEADER.match(line)
        if match:
            kind, index, tail, name = match.groups()
            names[kind].append((int(index), name, bool(tail)))
    parts = []
    for kind in ("KEYS", "ARGV"):
        entries = names[kind]
        if [i for i, _, _ in entries] != list(range(1, len(entries) + 1)):
            raise ValueError(f"{kind} must be numbered 1, 2, ... in the header")
        if any(tail for _, _, tail in entries[:-1]):
            raise ValueError(f"only the last {kind} may be a variable-length tail")
        parts.append(entries)
    keys, args = parts
    return Signature(tuple(n for _, n, _ in keys), tuple(n for _, n, _ in args),
                     bool(keys and keys[-1][2]), bool(args and args[-1][2]))


def _expand(source: str, included: set[str]) -> str:
    def include(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in included:
            return ""
        included.add(name)
        return _expand(_read(f"lib/{name}.lua"), included)

    return _INCLUDE.sub(include, source)


def prelude(signature: Signature) -> str:
    """Lua that binds the header's names: `KEY.<name>`, `ARG.<name>`, a tail as a list."""
    lines = []
    for table, array, names, tail in (("KEY", "KEYS", signature.keys, signature.keys_tail),
                                      ("ARG", "ARGV", signature.args, signature.args_tail)):
        fixed = names[:-1] if tail else names
        bound = ", ".join(f"{name} = {array}[{i}]" for i, name in enumerate(fixed, 1))
        lines.append(f"local {table} = {{{bound}}}")
        if tail:
            lines.append(f"{table}.{names[-1]} = {{}}")
            lines.append(f"for i = {len(names)}, #{array} do "
                         f"{table}.{names[-1]}[i - {len(names) - 1}] = {array}[i] end")
    return "\n".join(lines) + "\n"


@cache
def load_source(name: str) -> tuple[str, Signature]:
    """The script's text with its prelude and includes, and its signature (from its header)."""
    source = _read(f"{name}.lua")
    signature = parse_signature(source)
    return prelude(signature) + _expand(source, set()), signature


def _ordered(names: tuple[str, ...], tail: bool, given: Mapping[str, Any], what: str
             ) -> list[Any]:
    missing, unknown = set(names) - set(given), set(given) - set(names)
    if missing or unknown:
        raise TypeError(f"{what}: missing {sorted(missing)}, unknown {sorted(unknown)}")
    values: list[Any] = [given[name] for name in names]
    if tail:
        last = values.pop()
        if isinstance(last, str | bytes) or not isinstance(last, Sequence):
            raise TypeError(f"{what}: {names[-1]} takes a list")
        values.extend(last)
    return values


class Script:
    """One Lua script on one Redis client, called with named KEYS and ARGV."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        source, self.signature = load_source(name)
        self.name = name
        self._script = client.register_script(source)

    def ordered(self, keys: Mapping[str, Value | Sequence[Value]],
                args: Mapping[str, Value | Sequence[Value]]) -> tuple[list[Any], list[Any]]:
        """KEYS and ARGV as the script reads them, from their names."""
        return (_ordered(self.signature.keys, self.signature.keys_tail, keys, f"{self.name} KEYS"),
                _ordered(self.signature.args, self.signature.args_tail, args, f"{self.name} ARGV"))

    @property
    def sha(self) -> str:
        return str(self._script.sha)

    def __call__(self, *, keys: Mapping[str, Value | Sequence[Value]],
                 args: Mapping[str, Value | Sequence[Value]]) -> Any:
        ordered_keys, ordered_args = self.ordered(keys, args)
        return self._script(keys=ordered_keys, args=ordered_args)


class Batch:
    """Several script calls in one round trip. redis-py's own pipelined scripts first ask
    `SCRIPT EXISTS` (a second round trip); here a call that finds its script gone (Redis
    restarted) is simply made again on its own, which loads it.

    With `replicas`, the round trip ends with `WAIT replicas timeout_ms` on the same
    connection: the writes have reached that many replicas (or the timeout passed: `durable`
    says which) when `execute` returns, so a failover cannot take them back."""

    def __init__(self, client: redis.Redis, replicas: int = 0, timeout_ms: int = 500) -> None:
        self._pipe = client.pipeline(transaction=False)
        self._calls: list[tuple[Script, list[Any], list[Any]]] = []
        self._replicas, self._timeout_ms = replicas, timeout_ms
        self.durable = True  #: False when WAIT timed out before enough replicas had the writes

    def add(self, script: Script, *, keys: Mapping[str, Value | Sequence[Value]],
            args: Mapping[str, Value | Sequence[Value]]) -> None:
        ordered_keys, ordered_args = script.ordered(keys, args)
        self._pipe.evalsha(script.sha, len(ordered_keys), *ordered_keys, *ordered_args)
        self._calls.append((script, ordered_keys, ordered_args))

    def execute(self) -> list[Any]:
        if not self._calls:
            return []
        if self._replicas:
            self._pipe.execute_command("WAIT", self._replicas, self._timeout_ms)
        replies: list[Any] = self._pipe.execute(raise_on_error=False)
        if self._replicas:
            reached = replies.pop()
            if isinstance(reached, int) and reached < self._replicas:
                self.durable = False
                log.warning("Redis WAIT: %d of %d replicas acknowledged within %d ms", reached,
                            self._replicas, self._timeout_ms)
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):
                script, keys, args = self._calls[i]
                replies[i] = script._script(keys=keys, args=args)
            elif isinstance(reply, Exception):
                raise reply
        return replies


class Scripts:
    """Every script, loaded once per Redis client: `scripts.register(keys=..., args=...)`."""

    NAMES = ("register", "grant", "grant_webhooks", "mark_posting", "created", "requeue",
             "schedule", "finish", "release", "cancel", "callback", "redrive", "record_invalid",
             "webhook_done", "webhook_redrive", "deliver", "bury_message", "renew",
             "create_batch", "grant_copies", "copied")

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        for name in self.NAMES:
            setattr(self, name, Script(client, name))

    register: Script
    grant: Script
    grant_webhooks: Script
    mark_posting: Script
    created: Script
    requeue: Script
    schedule: Script
    finish: Script
    release: Script
    cancel: Script
    callback: Script
    redrive: Script
    record_invalid: Script
    webhook_done: Script
    webhook_redrive: Script
    deliver: Script
    bury_message: Script
    renew: Script
    create_batch: Script
    grant_copies: Script
    copied: Script
