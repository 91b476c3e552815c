"""Algorithm registry: name -> module. Each module exposes `train(run)` and
`make_policy(cfg, obs_space, action_space)` (the network whose `act(obs, greedy)` plays)."""

from __future__ import annotations

import importlib

ALGOS = ("a3c", "actor_critic", "reinforce", "ddpg")


def get(name: str):
    if name not in ALGOS:
        raise ValueError(f"unknown algo {name!r}; choose one of: {', '.join(ALGOS)}")
    return importlib.import_module(f"pixelrl.algos.{name}")
