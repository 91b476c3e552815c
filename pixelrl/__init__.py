"""pixelrl: reinforcement learning from pixels.

Python API:
    env = pixelrl.make_env("Pong", seed=0, num_envs=8)      # the vectorized env training uses
    agent = pixelrl.load_agent("runs/.../checkpoints/last.pt")
    actions = agent.act(obs)                                 # greedy actions for a batch
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["make_env", "load_agent", "compose_config", "__version__"]


def compose_config(overrides: list[str] | None = None, check: bool = True):
    """The composed (and, with check=True, checked) config for command-line style overrides."""
    from pixelrl.app import compose_config as _compose

    return _compose(overrides, check)


def make_env(name: str, seed: int = 0, num_envs: int = 1, mode: str = "train", **env_overrides):
    """The vectorized, preprocessed env that training uses for `env=<name>`.

    `env_overrides` set `env.*` keys, e.g. `make_env("Pong", backend="sync", sticky_actions=0.25)`.
    mode="eval" turns off the training-only signals (episodic life, reward clipping).
    The first `reset()` without a seed uses `seed` (env i gets seed + i).
    """
    from omegaconf import OmegaConf

    from pixelrl.app import check_config
    from pixelrl.config import CONTINUOUS_ENV_KINDS
    from pixelrl.envs import make_vector_env

    cfg = compose_config([f"env={name}"], check=False)
    if cfg.env.kind in CONTINUOUS_ENV_KINDS:  # the default algo (a3c) is discrete
        cfg = compose_config([f"env={name}", "algo=ddpg"], check=False)
    for key, value in env_overrides.items():
        OmegaConf.update(cfg, f"env.{key}", value, merge=True)
    check_config(cfg)
    env = make_vector_env(cfg.env, num_envs, mode=mode)
    env.default_seed = seed
    return env


def load_agent(path: str, device: str = "cpu"):
    """The greedy agent saved in a checkpoint file or run dir; `agent.act(obs)` -> actions."""
    from pixelrl.app import load_agent as _load

    return _load(path, device)
