"""What every command prints: text for people or, with `--json` (accepted by every command and
group, before or after the command's name), JSON for scripts: one document, or one line per
item for the commands that list or act on several; a failure is `{"error": ...}` on stderr, with
the same exit code. Commands whose output is a JSON document anyway print it compact."""

from __future__ import annotations

import json
from typing import IO, Any

import click

_JSON = "astria_queue_json"  #: the key in click's context meta (shared by nested commands)


def json_wanted() -> bool:
    context = click.get_current_context(silent=True)
    return bool(context and context.meta.get(_JSON))


def say(text: str, data: Any) -> None:
    """`text`, or `data` as one line of JSON with --json."""
    click.echo(json.dumps(data, default=str) if json_wanted() else text)


def said_each(results: dict[str, str], key: str = "id") -> None:
    """What happened to each of several ids: `id: result` lines, or `{key: id, "result": ...}`
    JSON lines."""
    for name, result in results.items():
        say(f"{name}: {result}", {key: name, "result": result})


def print_json(data: Any) -> None:
    """A JSON document: indented for people, one line with --json."""
    click.echo(json.dumps(data, default=str, indent=None if json_wanted() else 2))


class CommandFailed(click.ClickException):
    """A command that failed: `Error: <message>`, or `{"error": <message>}` with --json."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.as_json = json_wanted()  # click shows it after the command's context is gone

    def show(self, file: IO[Any] | None = None) -> None:
        if self.as_json:
            click.echo(json.dumps({"error": self.format_message()}), err=True)
        else:
            super().show(file)


def _remember(context: click.Context, _: click.Parameter, value: bool) -> None:
    if value:
        context.meta[_JSON] = True


def with_json(command: click.Command) -> click.Command:
    """Give the command, and every command under a group, the `--json` option."""
    command.params.append(click.Option(
        ["--json"], is_flag=True, expose_value=False, is_eager=True, callback=_remember,
        help="Print JSON instead of text (one document, or one line per item)."))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            with_json(sub)
    return command
