"""Rollouts (pixelrl/rollout.py): envs split into groups that step in turn give the rollout one
vector env of all of them gives."""

import numpy as np
import pytest
import torch

from pixelrl import compose_config
from pixelrl.algos.actor_critic import make_policy
from pixelrl.envs import TRAIN, make_vector_env
from pixelrl.rollout import collect

CPU = torch.device("cpu")


def _rollout(cfg, groups, num_envs, n_steps, backend, updates, bf16=False):
    """`updates` rollouts in a row of one fixed policy (greedy: the same actions whatever the
    order of sampling) on num_envs envs in `groups` groups, seeded seed + i for env i."""
    per = num_envs // groups
    envs = [make_vector_env(cfg.env, per, mode=TRAIN, backend=backend) for _ in range(groups)]
    obs = [torch.as_tensor(e.reset(seed=5 + i * per)[0]) for i, e in enumerate(envs)]
    torch.manual_seed(0)
    net = make_policy(cfg, envs[0].single_observation_space, envs[0].single_action_space)
    seen = []

    def on_episodes(info, _steps):
        seen.append(info)

    try:
        for _ in range(updates):
            if groups == 1:
                rollout, out = collect(net, envs[0], obs[0], n_steps, CPU, on_episodes, bf16)
                obs = [out]
            else:
                rollout, obs = collect(net, envs, obs, n_steps, CPU, on_episodes, bf16)
    finally:
        for e in envs:
            e.close()
    return rollout, torch.cat(obs), seen


@pytest.mark.parametrize(
    "overrides,backend,bf16",
    [
        # Catch cut at 3 steps: time-limit truncations every few steps, bootstrapped mid-rollout
        (["env=Catch", "env.max_episode_frames=3"], "sync", False),
        (["env=Catch", "env.max_episode_frames=3"], "async", False),  # step_async/step_wait
        (["env=Pong"], "ale_vector", False),  # ale-py's send/recv
        (["env=Pong"], "ale_vector", True),  # the loss's one bf16 forward over all the groups' obs
    ],
    ids=["sync", "async", "ale_vector", "ale_vector-bf16"],
)
def test_groups_of_envs_give_the_rollout_of_one_vector_env(monkeypatch, overrides, backend, bf16):
    monkeypatch.setattr("pixelrl.rollout.sample_actions", lambda logits: logits.argmax(-1))
    cfg = compose_config(["algo=actor_critic", *overrides])
    updates = 3 if backend != "ale_vector" else 1
    one, obs_one, _ = _rollout(cfg, 1, 4, 5, backend, updates, bf16)
    two, obs_two, infos = _rollout(cfg, 2, 4, 5, backend, updates, bf16)
    assert torch.equal(obs_one, obs_two)
    for key in ("actions", "rewards", "terminated", "truncated"):
        assert torch.equal(one[key], two[key]), key
    for key in ("logits", "values", "next_values"):  # batches of 2 and 4: float rounding only
        torch.testing.assert_close(one[key], two[key], rtol=1e-4, atol=1e-5)
    assert one["values"].requires_grad and two["values"].requires_grad  # graphs for the loss
    if backend != "ale_vector":
        assert one["truncated"].any()  # the bootstrap at time limits was exercised
        # a truncated step bootstraps from V(final obs), not V(the reset obs that follows it)
        t, i = (x[0] for x in one["truncated"].nonzero(as_tuple=True))
        if t + 1 < one["values"].shape[0]:
            assert not torch.equal(two["next_values"][t, i], two["values"][t + 1, i])
    assert len(infos) == 2 * 5 * updates  # each group's step reported its own info


def test_a2c_trains_with_groups_of_envs(cli, tmp_path):
    from .conftest import FAST, metrics

    cli(
        "algo=actor_critic",
        "env=Catch",
        "algo.num_envs=8",
        "algo.env_groups=2",
        "total_frames=4000",
        "eval.every_frames=0",
        "eval.episodes=4",
        *FAST,
        "hydra.run.dir=run",
        check=True,
    )
    rows = metrics(tmp_path / "run")
    assert max(r["frames"] for r in rows) >= 4000
    assert any("train/episode_return" in r for r in rows)
    assert np.isfinite([r["eval/return_mean"] for r in rows if "eval/return_mean" in r]).all()
