"""The CLI's conventions, in-process through click's own runner: `--json` everywhere, failures
as JSON on stderr with it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from worker.cli import main
from worker.cli.dead import chosen


def commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], click.Command]]:
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))


def test_every_command_and_group_takes_json() -> None:
    missing = [" ".join(path) for path, command in commands(main)
               if "--json" not in {opt for p in command.params for opt in p.opts}]
    assert missing == [] and len(list(commands(main))) > 25


def test_a_refused_spec_is_a_json_error_on_stderr_whichever_side_json_is_on() -> None:
    runner = CliRunner()
    for args in (["--json", "enqueue", '{"tune_id": 1}'], ["enqueue", '{"tune_id": 1}', "--json"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 1 and result.stdout == ""
        assert json.loads(result.stderr) == {"error": "InvalidSpec: text: Field required"}
    text = runner.invoke(main, ["enqueue", '{"tune_id": 1}'])
    assert text.exit_code == 1 and text.stderr.startswith("Error: InvalidSpec: text:")


def test_a_redrive_or_purge_takes_the_ids_named_or_every_dead_one() -> None:
    """`--all` with nothing dead has nothing to do; neither ids nor `--all` is a usage error."""
    assert chosen(("a",), False, lambda: ["x"], "job") == ["a"]
    assert chosen((), True, lambda: iter(["x", "y"]), "job") == ["x", "y"]
    assert chosen((), True, lambda: [], "job") == []
    with pytest.raises(click.UsageError, match="name webhook ids or pass --all"):
        chosen((), False, lambda: ["x"], "webhook")
