"""Worker processes (A3C learners, REINFORCE episode workers, env workers): how they start, how
they report, and how the main process watches and stops them. Written once for all of them.

Inside a worker, `worker_setup(parent_pid)` comes first: the worker ignores SIGINT and SIGTERM
(a Ctrl-C or `timeout` reaches the whole process group; the main process decides how the run
ends, writes its checkpoint and then stops the workers) and dies with the main process, so a
SIGKILLed run leaves no orphans holding shared memory. `report_errors(rank, results)` wraps the
worker's body: an exception is sent to the main process as one message before the worker exits.

In the main process, `WorkerGroup` starts the workers and reads their messages: a worker that
sent an error, or that died (killed, OOM), ends the wait with one TrainingError line naming it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue as queue_lib
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence

from pixelrl.errors import TrainingError

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}  # the main process decides what they do


def exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


START_METHOD_ENV = "PIXELRL_START_METHOD"  # fork | spawn | forkserver: overrides the choice


def start_method(env_kind: str | None = None) -> str:
    """How worker processes start: `fork` on Linux (fast: nothing is imported again), `spawn` on
    macOS (forking a process that has used Apple's frameworks, MPS included, is unsafe) and for
    dm_control (its rendering contexts do not survive a fork). $PIXELRL_START_METHOD overrides."""
    chosen = os.environ.get(START_METHOD_ENV)
    if chosen:
        return chosen
    if sys.platform == "darwin" or env_kind == "dmc" or not hasattr(os, "fork"):
        return "spawn"
    return "fork"


def worker_setup(parent_pid: int, die_with_parent: bool = True) -> None:
    """First thing in a worker process: leave stop signals to the main process, and end when it
    ends (Linux: the kernel sends SIGKILL when the parent dies; elsewhere the worker's own loop
    notices `parent_alive(parent_pid)` turning false). `die_with_parent` must be False for a
    worker started from a thread other than the main one: the kernel ties the signal to the
    thread, so the worker would die when that thread ends."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # held while the worker was started: now dropped
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if die_with_parent and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if not parent_alive(parent_pid):  # it died before the kernel could be told
        os._exit(0)


@contextlib.contextmanager
def stop_signals_held():
    """Start worker processes inside this: SIGINT and SIGTERM are blocked meanwhile, so a worker
    is born with them blocked (a signal mask survives fork and exec) and a stop signal to the
    group during a spawned worker's seconds of imports stays pending until worker_setup ignores
    it, instead of ending the worker with a KeyboardInterrupt traceback. In the main process the
    signals are held, not lost: they arrive as soon as the workers are started."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def started_in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def parent_alive(parent_pid: int) -> bool:
    return os.getppid() == parent_pid


@contextlib.contextmanager
def report_errors(rank: int, results):
    """Run a worker's body; an exception goes to the main process as {"type": "error", ...}
    (waited for, so it arrives before the worker's exit is seen), then the worker exits 1."""
    try:
        yield
    except Exception as e:
        results.put(
            {
                "type": "error",
                "rank": rank,
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(),
            }
        )
        results.close()
        results.join_thread()
        raise SystemExit(1) from None


class WorkerGroup:
    """Worker processes and the one queue they report on, watched by the main process."""

    def __init__(self, ctx, label: str):
        self.ctx, self.label = ctx, label
        self.results = ctx.Queue()
        self.stop_event = ctx.Event()
        self.procs: list = []
        self._last_check = time.monotonic()

    def start(self, target: Callable, args: Sequence[tuple], name: str) -> None:
        """One process per entry of `args`: target(*args[rank])."""
        with stop_signals_held():
            for rank, worker_args in enumerate(args):
                p = self.ctx.Process(
                    target=target, args=worker_args, name=f"{name}-{rank}", daemon=True
                )
                p.start()
                self.procs.append(p)

    def check(self) -> None:
        """Raise TrainingError if a worker has exited, with its own error message if it sent one."""
        for rank, p in enumerate(self.procs):
            if p.exitcode is None:
                continue
            # a worker that raised sent its error just before exiting: prefer that message
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                try:
                    msg = self.results.get(timeout=0.1)
                except queue_lib.Empty:
                    continue
                self._raise_if_error(msg)
            raise TrainingError(
                f"{self.label} {rank} (pid {p.pid}) died: {exit_reason(p.exitcode)}"
            )

    def _raise_if_error(self, msg: dict) -> None:
        if msg.get("type") == "error":
            raise TrainingError(f"{self.label} {msg['rank']} failed: {msg['error']}")

    def get(self, timeout: float = 0.25) -> dict | None:
        """The next message (None after `timeout`), after checking the workers are alive at least
        every half second; a worker's error or death raises TrainingError."""
        try:
            msg = self.results.get(timeout=timeout)
        except queue_lib.Empty:
            msg = None
        if msg is None or time.monotonic() - self._last_check > 0.5:
            self.check()
            self._last_check = time.monotonic()
        if msg is not None:
            self._raise_if_error(msg)
        return msg

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the workers to stop (the event), then kill what is left: they ignore SIGTERM."""
        self.stop_event.set()
        deadline = time.monotonic() + timeout_s
        while any(p.is_alive() for p in self.procs) and time.monotonic() < deadline:
            with contextlib.suppress(queue_lib.Empty, OSError, EOFError, ValueError):
                while True:  # keep the pipe drained so no worker blocks on a full buffer
                    self.results.get_nowait()
            time.sleep(0.05)
        for p in self.procs:
            if p.is_alive():
                p.kill()
            p.join(timeout=2.0)
        self.procs = []
