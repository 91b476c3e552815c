"""Watching and stopping worker processes (A3C learners, REINFORCE episode workers).

The main process polls its workers while it waits for their messages: a worker that raised sends
its error first and exits; one that was killed just disappears. Either way the run ends with one
line naming the worker, and the others are stopped, so nothing hangs and nothing is orphaned.
"""

from __future__ import annotations

import queue as queue_lib
import signal
import time

from pixelrl.run import TrainingError


def exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def check_workers(workers, queue, label: str) -> None:
    """Raise TrainingError if a worker has exited, with its own error message when it sent one."""
    for rank, p in enumerate(workers):
        if p.exitcode is None:
            continue
        # a worker that raised sent its error just before exiting: prefer that message
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                msg = queue.get(timeout=0.1)
            except queue_lib.Empty:
                continue
            if msg.get("type") == "error":
                raise TrainingError(f"{label} {msg['rank']} failed: {msg['error']}")
        raise TrainingError(f"{label} {rank} (pid {p.pid}) died: {exit_reason(p.exitcode)}")


def stop_workers(workers, queue, stop, timeout_s: float = 5.0) -> None:
    """Ask workers to stop (the `stop` event), then terminate, then kill what is left."""
    stop.set()
    deadline = time.monotonic() + timeout_s
    while any(p.is_alive() for p in workers) and time.monotonic() < deadline:
        try:  # keep the pipe drained so no worker blocks on a full buffer
            while True:
                queue.get_nowait()
        except (queue_lib.Empty, OSError, EOFError):
            pass
        time.sleep(0.05)
    for p in workers:
        if p.is_alive():
            p.terminate()
    for p in workers:
        p.join(timeout=1.0)
        if p.is_alive():
            p.kill()
            p.join(timeout=1.0)
