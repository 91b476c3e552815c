"""Environment factory: config -> vectorized, preprocessed env with the training signals.

`make_vector_env(env_cfg, num_envs, mode)` is what every algorithm and the evaluator call;
`pixelrl.make_env(name, ...)` is the same thing for users, composed from `conf/env/<name>.yaml`.
Every env returned here is a gymnasium VectorEnv with same-step autoreset (an ended env's last
observation is in `info["final_obs"]`), uint8 channel-first observations (or Karpathy's 6400
floats), `info["episode"]` with raw returns, and two attributes: `frames_per_step` (emulator
frames per agent step) and `video_fps`.
"""

from __future__ import annotations

import functools
import os

import gymnasium as gym
from gymnasium.vector import AutoresetMode
from omegaconf import DictConfig, OmegaConf

from pixelrl.envs import atari, toy
from pixelrl.envs.wrappers import EpisodeSignals, VectorActionSubset
from pixelrl.workers import start_method

toy.register()

TRAIN, EVAL = "train", "eval"


def check(env_cfg: DictConfig) -> None:
    """Raise ConfigError for an env config its family cannot build (each family checks its own
    keys: ROM ids, dm_control tasks, gymnasium ids, what a backend can run)."""
    if env_cfg.kind == "atari":
        atari.check(env_cfg)
    elif env_cfg.kind in ("control", "dmc"):
        from pixelrl.envs import control

        control.check(env_cfg)


def with_sticky_actions(env_cfg: DictConfig, sticky: float | None) -> DictConfig:
    """env_cfg at sticky actions `sticky` (an Atari repeat_action_probability); None: as it is."""
    if sticky is None:
        return env_cfg
    return OmegaConf.merge(env_cfg, {"sticky_actions": float(sticky)})


def num_actions(env_cfg: DictConfig) -> int | None:
    """How many discrete actions the configured env offers (None: continuous actions)."""
    if env_cfg.kind == "atari":
        if env_cfg.action_set:
            return len(env_cfg.action_set)
        return 18 if env_cfg.full_action_space else atari.num_actions(env_cfg.game)
    if env_cfg.kind == "toy":
        return toy.Catch.NUM_ACTIONS
    return None


def single_env_fn(env_cfg: DictConfig, render: bool = False):
    """A picklable factory for one env with the configured recipe (no vector-level signals)."""
    return functools.partial(_make_single, _plain(env_cfg), render)


def _plain(env_cfg):
    from omegaconf import OmegaConf

    if isinstance(env_cfg, DictConfig):
        return OmegaConf.to_container(env_cfg, resolve=True)
    return env_cfg


def _make_single(env_cfg, render: bool) -> gym.Env:
    from omegaconf import OmegaConf

    env_cfg = OmegaConf.create(env_cfg)
    if env_cfg.kind == "atari":
        return atari.make_single(env_cfg, render)
    if env_cfg.kind == "toy":
        from pixelrl.envs.wrappers import FrameStack

        env = toy.Catch(env_cfg.rows, env_cfg.cols, env_cfg.scale, "rgb_array" if render else None)
        env = gym.wrappers.TimeLimit(env, int(env_cfg.max_episode_frames))
        if env_cfg.frame_stack > 1:
            env = FrameStack(env, int(env_cfg.frame_stack))
        return env
    if env_cfg.kind in ("control", "dmc"):
        from pixelrl.envs import control

        return control.make_single(env_cfg, render)
    raise ValueError(f"env.kind={env_cfg.kind!r} has no env factory")


def frames_per_step(env_cfg: DictConfig) -> int:
    if env_cfg.kind == "atari":
        return atari.frames_per_step(env_cfg)
    if env_cfg.kind in ("control", "dmc"):
        return int(env_cfg.action_repeat)
    return 1


def video_fps(env_cfg: DictConfig) -> int:
    if env_cfg.kind == "atari":
        return atari.video_fps(env_cfg)
    if env_cfg.kind in ("control", "dmc"):
        from pixelrl.envs import control

        return control.video_fps(env_cfg)
    return 10


def make_vector_env(
    env_cfg: DictConfig,
    num_envs: int,
    mode: str = TRAIN,
    backend: str | None = None,
    num_threads: int = 0,
    render: bool = False,
) -> gym.vector.VectorEnv:
    """Build `num_envs` copies of the configured env behind one VectorEnv.

    mode=train turns on the training-only signals (episodic life, reward clipping) that the env
    config asks for; mode=eval never does. `render=True` (video) always uses the sync backend.
    Seeding is by `reset(seed=s)`: env i gets s + i.
    """
    backend = backend or env_cfg.backend
    if render:
        backend = "sync"
    if backend == "ale_vector" and env_cfg.kind != "atari":
        backend = "sync"
    if backend == "ale_vector":
        threads = num_threads or min(num_envs, os.cpu_count() or 1)
        venv = atari.make_ale_vector(env_cfg, num_envs, threads)
        if mode == EVAL and env_cfg.noop_max:  # evaluations may name their no-op starts
            venv = atari.AleNoopStarts(venv, int(env_cfg.noop_max))
        if env_cfg.action_set:
            venv = VectorActionSubset(venv, list(env_cfg.action_set))
    else:
        fns = [single_env_fn(env_cfg, render) for _ in range(num_envs)]
        if backend == "sync":
            venv = gym.vector.SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
        elif backend == "async":
            venv = gym.vector.AsyncVectorEnv(
                fns, context=start_method(env_cfg.kind), autoreset_mode=AutoresetMode.SAME_STEP
            )
        elif backend == "procs":
            from pixelrl.envs.vector import ProcVectorEnv

            venv = ProcVectorEnv(fns, num_threads or None, start_method(env_cfg.kind))
        else:
            raise ValueError(f"env.backend={backend!r} has no vector env")
    train = mode == TRAIN
    venv = EpisodeSignals(
        venv,
        episodic_life=train and bool(env_cfg.get("episodic_life", False)),
        clip_rewards=train and bool(env_cfg.get("clip_rewards", False)),
    )
    venv.frames_per_step = frames_per_step(env_cfg)
    venv.video_fps = video_fps(env_cfg)
    return venv
