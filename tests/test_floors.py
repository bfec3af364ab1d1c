"""The dependency floors of pyproject.toml, tested: a virtualenv of its own with every floor at
once (constraints-floors.txt), then the unit layer (the limiter's virtual-time model left
out), a job's whole path through Celery and the broker's hostile-input tests in it, as processes
of that environment."""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

import pytest

from tests.harness import ROOT

pytestmark = pytest.mark.slow  # installs an environment, starts worker processes


def test_the_floors_install_together_and_pass(tmp_path: Path) -> None:
    env_dir = tmp_path / "floors"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    installed = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-c", "constraints-floors.txt", "-e", ".[dev]"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]
    tested = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit",
         "tests/test_pipeline.py", "tests/test_hostile_intake.py",
         # committed documents are generated with constraints.txt's pydantic, not the floor's
         "-k", "not committed_schemas_are_current",
         # the limiter's minutes of virtual time run Lua in Redis, which no floor changes (the
         # other unit tests call the same scripts through the floor's redis-py)
         "--ignore", "tests/unit/test_limiter.py"],
        cwd=ROOT, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, capture_output=True,
        text=True, timeout=600)
    assert tested.returncode == 0, tested.stdout[-5000:]
