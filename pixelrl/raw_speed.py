"""The baseline every speed figure is divided by: the preprocessed env alone, stepped with random
actions, with the training command's settings (the same envs, backend and preprocessing)."""

from __future__ import annotations

import time

import numpy as np


def raw_env_speed(overrides: list[str], num_envs: int, seconds: float) -> dict:
    """The preprocessed env with random actions: agent steps/s and emulator frames/s."""
    from pixelrl import compose_config
    from pixelrl.envs import TRAIN, make_vector_env

    cfg = compose_config(overrides)
    env = make_vector_env(cfg.env, num_envs, mode=TRAIN)
    rng = np.random.default_rng(0)
    space = env.single_action_space
    env.reset(seed=0)

    def random_actions():
        if hasattr(space, "n"):
            return rng.integers(0, space.n, size=num_envs)
        return rng.uniform(space.low, space.high, size=(num_envs, *space.shape)).astype(np.float32)

    try:  # a Ctrl-C meanwhile still closes the env (its worker processes)
        for _ in range(20):  # warm-up
            env.step(random_actions())
        steps, start = 0, time.perf_counter()
        if env.blocks is not None:  # its fastest mode: each worker's block on its own
            pending = set(range(len(env.blocks)))
            for b in pending:
                env.step_block_async(b, random_actions()[: len(env.blocks[b])])
            while time.perf_counter() - start < seconds:
                b, _ = env.wait_any_block(pending)
                steps += len(env.blocks[b])
                env.step_block_async(b, random_actions()[: len(env.blocks[b])])
            for b in pending:
                env.wait_any_block({b})
        else:
            while time.perf_counter() - start < seconds:
                env.step(random_actions())
                steps += num_envs
        elapsed = time.perf_counter() - start
    finally:
        env.close()
    return {
        "steps_per_s": steps / elapsed,
        "frames_per_s": steps * env.frames_per_step / elapsed,
        "frames_per_step": env.frames_per_step,
    }


def _step_own_env(env_fn, seconds: float, start, results) -> None:
    env = env_fn()
    space = env.action_space
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    start.wait()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, terminated, truncated, _ = env.step(
            space.sample() if not hasattr(space, "n") else int(rng.integers(space.n))
        )
        steps += 1
        if terminated or truncated:
            env.reset()
    results.put((steps, time.perf_counter() - t0))
    env.close()


def raw_env_speed_processes(overrides: list[str], num_procs: int, seconds: float) -> dict:
    """`num_procs` processes, each stepping its own preprocessed env with random actions."""
    import multiprocessing as mp

    from pixelrl import compose_config
    from pixelrl.envs import frames_per_step, single_env_fn
    from pixelrl.workers import start_method

    cfg = compose_config(overrides)
    ctx = mp.get_context(start_method(cfg.env.kind))
    start, results = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_step_own_env, args=(single_env_fn(cfg.env), seconds, start, results))
        for _ in range(num_procs)
    ]
    for p in procs:
        p.start()
    start.set()
    done = [results.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    steps_per_s = sum(n for n, _ in done) / max(t for _, t in done)
    fps = frames_per_step(cfg.env)
    return {
        "steps_per_s": steps_per_s,
        "frames_per_s": steps_per_s * fps,
        "frames_per_step": fps,
        "processes": num_procs,
    }
