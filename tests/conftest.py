"""Shared test helpers: run the real CLI in a subprocess, read a run's outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pixelrl.machine import let_openmp_threads_sleep

# The suite's own process runs torch too: its OpenMP threads must sleep while they wait, as the
# CLI's do, or on a busy machine they spin on the cores the tests need (2 cores, an A3C run
# beside it: three DDPG update tests took 126 s, with this 24 s). Set before torch loads.
let_openmp_threads_sleep()

import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# Tiny budgets that keep CLI smoke runs to a few seconds.
FAST = [
    "logger.wandb.mode=disabled",
    "logger.progress=false",
    "video.enabled=false",
]


# a hang guard, not a speed check: DDPG's Reach runs took ~30 s alone on 2 cores but went past
# 240 s with three test suites sharing the 2 cores (2026-12-03, AMD EPYC): threads spinning on
# the shared cores, and since 2026-12-06 those runs take one thread
CLI_TIMEOUT_S = 600


@pytest.fixture(autouse=True)
def _omp_wait_policy_as_it_was(monkeypatch):
    """The CLI's and the bench's main() set OMP_WAIT_POLICY's default in their own process;
    a test that calls them in-process gets the variable's earlier state back afterwards."""
    name = "OMP_WAIT_POLICY"
    was = os.environ.get(name)
    monkeypatch.setenv(name, was or "")  # records the earlier state, set or not, for the undo
    if was is None:
        monkeypatch.delenv(name)


def run_cli(
    *args: str,
    cwd: Path,
    timeout: float = CLI_TIMEOUT_S,
    check: bool = False,
    env: dict | None = None,
):
    """`python -m pixelrl <args>` in `cwd`; returns the CompletedProcess."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "pixelrl", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def last_json_line(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON line in:\n{text}")


@pytest.fixture
def main(tmp_path, monkeypatch):
    """The CLI's entry point, `pixelrl.__main__.main()`, called in this process with `args` as
    its argv (from tmp_path): (exit status, stdout, stderr). For input that must be refused
    before anything runs, it skips a fresh interpreter's seconds of imports per case; one case
    of each kind still goes through a real `python -m pixelrl` process (the `cli` fixture)."""
    import contextlib
    import io

    from pixelrl.__main__ import main as entry

    monkeypatch.chdir(tmp_path)

    def _run(*args):
        out, err = io.StringIO(), io.StringIO()
        monkeypatch.setattr(sys, "argv", ["pixelrl", *args])
        code = 0
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                entry()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return code, out.getvalue(), err.getvalue()

    return _run


@pytest.fixture
def cli(tmp_path):
    def _run(*args, **kwargs):
        return run_cli(*args, cwd=tmp_path, **kwargs)

    return _run


def kill_tree(proc) -> None:
    """Kill a Popen'd CLI and all its children (a failing test must not leave workers behind)."""
    try:
        parent = psutil.Process(proc.pid)
    except psutil.NoSuchProcess:
        return
    for p in [*parent.children(recursive=True), parent]:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture
def popen_cli(tmp_path):
    """Start `python -m pixelrl <args>` in the background; killed (with children) at teardown."""
    procs = []

    def _start(*args):
        proc = subprocess.Popen(
            [sys.executable, "-m", "pixelrl", *args],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield _start
    for proc in procs:
        if proc.poll() is None:
            kill_tree(proc)


def wait_for_rows(log, min_bytes=3000, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline and not (log.exists() and log.stat().st_size > min_bytes):
        time.sleep(0.2)
    assert log.exists(), "training never started"


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` skip, with the reason, on machines without CUDA (CI has none)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)
