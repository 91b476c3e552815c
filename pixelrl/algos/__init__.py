"""Algorithm registry: name -> module. Each module exposes `train(run)`,
`make_policy(cfg, obs_space, action_space)` (the network whose `act(obs, greedy)` plays) and,
where the algorithm has combinations of keys to refuse, `check(cfg)` (raises ConfigError; the
app calls it with the other config checks)."""

from __future__ import annotations

import importlib

ALGOS = ("a3c", "actor_critic", "reinforce", "ddpg")


def get(name: str):
    if name not in ALGOS:
        raise ValueError(f"unknown algo {name!r}; choose one of: {', '.join(ALGOS)}")
    return importlib.import_module(f"pixelrl.algos.{name}")
