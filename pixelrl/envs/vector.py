"""ProcVectorEnv: several envs per worker process, observations in shared memory.

gymnasium's AsyncVectorEnv runs one process per env; on a 2-core machine with 10-16 envs that is
mostly context switches and pipe traffic. Here P processes (default: one per core) each step a
block of envs serially and write observations straight into one shared array, so a vector step
costs one small message per process.

It also supports stepping a subset of envs (`step(actions, active=mask)`), and stepping each
worker's block on its own (`step_block_async` / `wait_any_block`), so that the agent computes
actions for one block while the other blocks' envs are stepping: REINFORCE uses both, to let
finished envs wait and to keep the env processes busy.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback
from multiprocessing.connection import wait as wait_connections

import gymnasium as gym
import numpy as np

from pixelrl.errors import TrainingError
from pixelrl.shm import SharedArray
from pixelrl.workers import (
    exit_reason,
    parent_alive,
    start_method,
    started_in_main_thread,
    stop_signals_held,
    worker_setup,
)

PARENT_CHECK_S = 1.0  # an idle env worker looks this often whether the main process is alive
SKIP = "skip"  # in a reset's seeds: an env that `options["reset_mask"]` leaves as it is


def _worker(conn, env_fns, first: int, specs: dict, parent_pid: int, main_thread: bool) -> None:
    worker_setup(parent_pid, die_with_parent=main_thread)
    try:
        envs = [fn() for fn in env_fns]
        conn.send(("spaces", envs[0].observation_space, envs[0].action_space))
        buf = {k: SharedArray.attach(s) for k, s in specs.items()}
        obs, act = buf["obs"].array, buf["actions"].array
        rew, term, trunc = buf["reward"].array, buf["terminated"].array, buf["truncated"].array
        final, lives, active = buf["final_obs"].array, buf["lives"].array, buf["active"].array
        idx = range(first, first + len(envs))
        while True:
            # a sibling forked later may hold our parent's end of the pipe open, so the parent's
            # death is not always an EOF here: look at it while idle
            if not conn.poll(PARENT_CHECK_S):
                if not parent_alive(parent_pid):
                    return
                continue
            cmd, arg = conn.recv()
            if cmd == "step":
                for i, env in zip(idx, envs):
                    if not active[i]:
                        rew[i], term[i], trunc[i] = 0.0, False, False
                        continue
                    o, r, te, tr, info = env.step(act[i])
                    rew[i], term[i], trunc[i] = r, te, tr
                    if te or tr:
                        final[i] = o
                        o, info = env.reset()
                    obs[i] = o
                    lives[i] = info.get("lives", 0)
                conn.send(("ok", None))
            elif cmd == "reset":  # arg: (one entry per env, its seed or SKIP to leave it be,
                seeds, options = arg  # the options every env that starts over is reset with)
                for j, (i, env) in enumerate(zip(idx, envs)):
                    if seeds[j] == SKIP:
                        continue
                    o, info = env.reset(seed=seeds[j], options=options)
                    obs[i] = o
                    lives[i] = info.get("lives", 0)
                conn.send(("ok", None))
            elif cmd == "call":
                name, args = arg
                conn.send(("ok", [getattr(env, name)(*args) for env in envs]))
            elif cmd == "close":
                for env in envs:
                    env.close()
                conn.send(("ok", None))
                return
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        return
    except Exception as e:  # report, the parent raises it
        try:
            conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        except Exception:
            pass


class ProcVectorEnv(gym.vector.VectorEnv):
    """Same-step autoreset vector env over `num_procs` processes, each stepping a block of envs."""

    def __init__(self, env_fns, num_procs: int | None = None, start: str | None = None):
        self.num_envs = len(env_fns)
        num_procs = max(1, min(num_procs or os.cpu_count() or 1, self.num_envs))
        ctx = mp.get_context(start or start_method())
        blocks = np.array_split(np.arange(self.num_envs), num_procs)
        self.blocks = [np.asarray(b) for b in blocks]
        probe_parent, probe_child = ctx.Pipe()
        self._conns, self._procs = [], []
        self._buf = None
        # Workers are started after the shared arrays exist, so spaces are probed up front.
        probe = ctx.Process(target=_probe_spaces, args=(probe_child, env_fns[0]), daemon=True)
        probe.start()
        probe_child.close()  # the probe's death is then an EOF here, not a wait forever
        try:
            msg = probe_parent.recv()
        except EOFError:
            probe.join(timeout=5)
            msg = ("error", f"the env probe process died ({exit_reason(probe.exitcode or 0)})")
        probe.join()
        if msg[0] == "error":
            raise TrainingError(f"env worker failed: {msg[1].splitlines()[0]}")
        _, obs_space, act_space = msg
        self.single_observation_space = obs_space
        self.single_action_space = act_space
        self.observation_space = gym.vector.utils.batch_space(obs_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(act_space, self.num_envs)
        n = self.num_envs
        act_shape = (n,) + tuple(act_space.shape or ())
        act_dtype = np.int64 if isinstance(act_space, gym.spaces.Discrete) else np.float32
        self._buf = {
            "obs": SharedArray((n, *obs_space.shape), obs_space.dtype),
            "final_obs": SharedArray((n, *obs_space.shape), obs_space.dtype),
            "actions": SharedArray(act_shape, act_dtype),
            "reward": SharedArray((n,), np.float64),
            "terminated": SharedArray((n,), np.bool_),
            "truncated": SharedArray((n,), np.bool_),
            "lives": SharedArray((n,), np.int64),
            "active": SharedArray((n,), np.bool_),
        }
        self._buf["active"].array[:] = True
        specs = {k: v.spec for k, v in self._buf.items()}
        here = (os.getpid(), started_in_main_thread())
        with stop_signals_held():
            for block in blocks:
                parent, child = ctx.Pipe()
                fns = [env_fns[i] for i in block]
                args = (child, fns, int(block[0]), specs, *here)
                p = ctx.Process(target=_worker, args=args, daemon=True)
                p.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(p)
        for conn in self._conns:
            self._expect(conn, "spaces")
        self._closed = False
        self.metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}

    def _dead(self, conn) -> TrainingError:
        block = self._conns.index(conn) if conn in self._conns else "?"
        code = None
        if block != "?":
            self._procs[block].join(timeout=1.0)
            code = self._procs[block].exitcode
        why = exit_reason(code) if code is not None else "gone"
        return TrainingError(f"env worker process {block} died ({why})")

    def _send(self, conn, message) -> None:
        try:
            conn.send(message)
        except (BrokenPipeError, ConnectionResetError):
            raise self._dead(conn) from None

    def _expect(self, conn, kind: str):
        try:
            msg = conn.recv()
        except (EOFError, ConnectionResetError):
            raise self._dead(conn) from None
        if msg[0] == "error":
            raise TrainingError(f"env worker failed: {msg[1].splitlines()[0]}")
        if msg[0] != kind:
            raise RuntimeError(f"env worker protocol error: expected {kind}, got {msg[0]}")
        return msg

    def _broadcast(self, cmd, arg=None):
        for conn in self._conns:
            self._send(conn, (cmd, arg))
        return [self._expect(conn, "ok")[1] for conn in self._conns]

    def reset(self, *, seed=None, options=None):
        """All envs, or (gymnasium's `options={"reset_mask": mask}`) those where mask is True;
        the others keep their episodes going and report their current observation."""
        if seed is None:
            seeds = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is not None:
            seeds = [s if m else SKIP for s, m in zip(seeds, np.asarray(mask, bool))]
        blocks = np.array_split(np.arange(self.num_envs), len(self._conns))
        for conn, block in zip(self._conns, blocks):
            self._send(conn, ("reset", ([seeds[i] for i in block], options or None)))
        for conn in self._conns:
            self._expect(conn, "ok")
        b = self._buf
        return b["obs"].array.copy(), {"lives": b["lives"].array.copy()}

    def step(self, actions, active: np.ndarray | None = None):
        b = self._buf
        b["actions"].array[:] = actions
        b["active"].array[:] = True if active is None else active
        self._broadcast("step")
        done = b["terminated"].array | b["truncated"].array
        info = {"lives": b["lives"].array.copy()}
        if done.any():
            final = b["obs"].array.copy()
            final[done] = b["final_obs"].array[done]
            info["final_obs"] = final
        return (
            b["obs"].array.copy(),
            b["reward"].array.copy(),
            b["terminated"].array.copy(),
            b["truncated"].array.copy(),
            info,
        )

    # -------------------------------------------------------------- block-wise asynchronous API
    def step_block_async(
        self, block: int, actions: np.ndarray, active: np.ndarray | None = None
    ) -> None:
        """Send actions to the envs of one worker (`self.blocks[block]`) without waiting."""
        idx = self.blocks[block]
        b = self._buf
        b["actions"].array[idx] = actions
        b["active"].array[idx] = True if active is None else active
        self._send(self._conns[block], ("step", None))

    def wait_any_block(self, pending: set[int]) -> tuple[int, tuple]:
        """Wait until one of the `pending` blocks has stepped; returns (block, (obs, reward,
        terminated, truncated, final_obs)) for that block's envs (same-step autoreset)."""
        ready = wait_connections([self._conns[i] for i in pending])
        block = self._conns.index(ready[0])
        self._expect(self._conns[block], "ok")
        idx = self.blocks[block]
        b = self._buf
        done = b["terminated"].array[idx] | b["truncated"].array[idx]
        obs = b["obs"].array[idx]
        final = obs.copy()
        if done.any():
            final[done] = b["final_obs"].array[idx][done]
        return block, (
            obs,
            b["reward"].array[idx].copy(),
            b["terminated"].array[idx].copy(),
            b["truncated"].array[idx].copy(),
            final,
        )

    def call(self, name: str, *args):
        out = []
        for res in self._broadcast("call", (name, args)):
            out.extend(res)
        return tuple(out)

    def close(self, **kwargs):
        if getattr(self, "_closed", True):
            return
        self._closed = True
        for conn in self._conns:
            try:
                conn.send(("close", None))
                conn.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
        for p in self._procs:
            p.join(timeout=2)
            if p.is_alive():
                p.kill()
        for shared in (self._buf or {}).values():
            shared.release()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _probe_spaces(conn, env_fn) -> None:
    try:
        env = env_fn()
        conn.send(("spaces", env.observation_space, env.action_space))
        env.close()
    except Exception as e:
        conn.send(("error", f"{type(e).__name__}: {e}"))
