"""REINFORCE's episode workers: the numpy policy and gradient equal the torch learner's, the
workers learn, fail loudly, and refuse networks they cannot play."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from pixelrl import compose_config
from pixelrl.algos.reinforce import accumulate_gradients, make_policy
from pixelrl.episode_workers import NumpyPolicy, _torch_params, episode_gradient
from pixelrl.returns import episode_returns, normalize_returns

from .conftest import FAST, metrics
from .test_learning import RANDOM_CATCH, final_eval


def numpy_params(net) -> dict[str, np.ndarray]:
    p = {k: (v.detach().numpy() if v is not None else None) for k, v in _torch_params(net).items()}
    hidden, k = p["w1"].shape[0], p["w2"].shape[0]
    return {
        "w1t": np.ascontiguousarray(p["w1"].T),
        "b1": p["b1"] if p["b1"] is not None else np.zeros(hidden, np.float32),
        "w2": p["w2"],
        "b2": p["b2"] if p["b2"] is not None else np.zeros(k, np.float32),
    }


def play_fixed(policy: NumpyPolicy, obs: np.ndarray, actions: np.ndarray) -> dict:
    """What play_episode records, for given observations and actions."""
    steps = {"idx": [], "vals": [], "hidden": [], "logits": [], "actions": list(actions)}
    for x in obs:
        idx, vals, h = policy.features(x)
        steps["idx"].append(idx)
        steps["vals"].append(vals)
        steps["hidden"].append(h)
        steps["logits"].append(policy.sample(h, np.random.default_rng(0))[1])
    return steps


def random_episodes(rng, space, lengths, num_actions):
    episodes = []
    for length in lengths:
        rewards = np.zeros(length)
        rewards[rng.choice(length, 4, replace=False)] = rng.choice([-1.0, 1.0], 4)
        if space.dtype == np.uint8:  # images: dense, scaled by 1/255
            obs = rng.integers(0, 256, size=(length, *space.shape), dtype=np.uint8)
        else:  # pg-pong difference frames: mostly zeros
            obs = (rng.random((length, *space.shape)) < 0.01) * rng.choice([-1, 1], (length, 1))
            obs = obs.astype(np.float32)
        actions = rng.integers(0, num_actions, length)
        episodes.append({"obs": obs, "actions": actions, "rewards": rewards})
    return episodes


CASES = {
    "pg-pong": (["experiment=karpathy_pong"], gym.spaces.Box(-1.0, 1.0, (6400,), np.float32), 2),
    "softmax, biases, entropy, images": (
        [
            "algo=reinforce",
            "model.trunk=mlp",
            "model.hidden=32",
            "algo.entropy_coef=0.05",
            "algo.normalize_returns=none",
            "algo.psi=total",
        ],
        gym.spaces.Box(0, 255, (2, 6, 5), np.uint8),
        3,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_numpy_gradient_equals_the_torch_learners(case):
    overrides, space, num_actions = CASES[case]
    cfg = compose_config(overrides)
    a = cfg.algo
    torch.manual_seed(0)
    net = make_policy(cfg, space, gym.spaces.Discrete(num_actions))
    if net.trunk.net[1].bias is not None:  # nonzero biases, so their gradients are checked too
        torch.nn.init.normal_(net.trunk.net[1].bias, std=0.5)
    episodes = random_episodes(np.random.default_rng(1), space, (37, 52), num_actions)
    accumulate_gradients(net, episodes, a, None, torch.device("cpu"))
    expected = {k: v.grad.numpy() for k, v in _torch_params(net).items() if v is not None}

    params = numpy_params(net)
    policy = NumpyPolicy(
        params, cfg.model.policy_head == "sigmoid", 1 / 255 if space.dtype == np.uint8 else 1.0
    )
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    for ep in episodes:
        returns = episode_returns(ep["rewards"], a.psi, a.gamma, a.reset_on_reward)
        psi = normalize_returns([returns], a.normalize_returns)[0]
        steps = play_fixed(policy, ep["obs"], ep["actions"])
        before = grads["w1t"].copy()
        stats, rows = episode_gradient(policy, steps, psi, a.entropy_coef, grads)
        changed = np.flatnonzero((grads["w1t"] != before).any(1))
        assert np.isin(changed, rows).all()  # the rows a worker adds to the shared buffer
        assert np.isfinite(stats["policy_loss"]) and stats["entropy"] > 0
    got = {"w1": grads["w1t"].T, "b1": grads["b1"], "w2": grads["w2"], "b2": grads["b2"]}
    for k, g in expected.items():
        np.testing.assert_allclose(got[k], g, rtol=2e-4, atol=2e-5, err_msg=k)
    assert np.abs(got["w1"]).max() > 0


def test_sampling_follows_the_policy():
    """P(action 0) = sigmoid(z): the empirical frequency matches it."""
    params = {
        "w1t": np.eye(3, 2, dtype=np.float32),
        "b1": np.zeros(2, np.float32),
        "w2": np.array([[1.5, -0.5]], np.float32),
        "b2": np.zeros(1, np.float32),
    }
    policy = NumpyPolicy(params, sigmoid=True, scale=1.0)
    _, _, h = policy.features(np.array([1.0, 0.0, 0.0], np.float32))
    rng = np.random.default_rng(0)
    picks = [policy.sample(h, rng)[0] for _ in range(4000)]
    assert np.mean(np.array(picks) == 0) == pytest.approx(1 / (1 + np.exp(-1.5)), abs=0.03)


def test_karpathy_preset_uses_the_workers_and_logs_like_pg_pong(cli, tmp_path):
    cli(
        "experiment=karpathy_pong",
        "algo.collector=workers",
        "algo.batch_episodes=3",
        "algo.num_envs=3",
        "total_frames=6000",
        "eval.every_frames=0",
        "eval.final=false",
        "checkpoint.every_frames=0",
        *FAST,
        "hydra.run.dir=run",
        check=True,
    )
    rows = metrics(tmp_path / "run")
    eps = [r for r in rows if "train/episode_return" in r]
    assert len(eps) >= 3 and eps[-1]["train/episodes"] == len(eps)
    assert all(-21 <= r["train/episode_return"] <= 21 for r in eps)
    losses = [r for r in rows if "losses/policy_loss" in r]
    assert losses and all(r["losses/batch_steps"] > 100 for r in losses)
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_workers_learn_catch(cli, tmp_path, seed):
    # Which worker plays which episode depends on the scheduler, so a seed does not fix the run.
    # At 40k frames a CI run scored 0.2 (2026-12-06). Offline, beside other jobs on 2 cores
    # (Xeon, no AMX), runs under 0.3: 20 of 56 at 20k, 1 of 76 at 40k (0.16), 0 of 30 at 60k
    # (all 30 scored 1.0, as did 75 of the 76 at 40k); at or under 0.0, the bar here: 12 of 56
    # at 20k, 0 of 26 at 30k.
    args = ["algo=reinforce", "model.trunk=mlp", "algo.collector=workers"]
    args += ["algo.normalize_returns=episode", f"seed={seed}", "total_frames=60000"]
    assert final_eval(cli, tmp_path, *args) > RANDOM_CATCH + 0.6


def test_workers_refuse_a_conv_network(main):
    code, _, err = main("algo=reinforce", "env=Catch", "algo.collector=workers", *FAST)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "algo.collector=workers is not possible here" in lines[0]


@pytest.mark.parametrize("collector", ["workers", "batched"])
def test_the_spawn_start_method_runs_the_worker_processes(cli, tmp_path, collector):
    """macOS starts worker processes with spawn (forking there is unsafe); Linux checks that
    path too: episode workers, and env worker processes (procs) for the batched collector."""
    proc = cli(
        "algo=reinforce",
        "env=Catch",
        f"algo.collector={collector}",
        "algo.normalize_returns=episode",
        "env.backend=procs",
        "algo.num_envs=2",  # each spawned process imports torch anew: keep them few
        "algo.batch_episodes=2",
        "total_frames=3000",
        "eval.every_frames=0",
        *FAST,
        "hydra.run.dir=run",
        env={"PIXELRL_START_METHOD": "spawn"},
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert max(r["frames"] for r in metrics(tmp_path / "run")) >= 3000
