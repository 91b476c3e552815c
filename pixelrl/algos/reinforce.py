"""REINFORCE (Williams 1992), and Karpathy's "Pong from Pixels" as a preset of it.

Monte-Carlo policy gradient: after every `batch_episodes` finished episodes, all played by the same
policy, one update with
    g = sum over episodes, steps of  Psi_t * grad log pi(a_t | s_t)
where Psi_t is the seed's choice 1 (`total`: the whole return), 2 (`reward_to_go`) or 3
(`baseline`: reward-to-go minus a learned V(s_t) or a running mean), optionally restarted at every
nonzero reward (`reset_on_reward`, Pong) and standardized per episode or per batch.

The episodes come from one of two sources (`algo.collector`): the policy batched in the learner
over envs in worker processes (`pixelrl.episodes`, any network), or, for a one-hidden-layer MLP
such as pg-pong's, worker processes that play and differentiate whole episodes with a numpy copy
of it (`pixelrl.episode_workers`). Either way the batch's gradient is in `.grad` when it returns.
"""

from __future__ import annotations

import numpy as np
import torch

from pixelrl import episode_workers
from pixelrl.checkpoint import learner_state, restore_learner
from pixelrl.device import check_process_count
from pixelrl.episodes import BatchedEpisodes
from pixelrl.errors import ConfigError
from pixelrl.evaluate import act_fn
from pixelrl.losses import policy_gradient_loss
from pixelrl.models import ActorCritic
from pixelrl.optim import LinearLR, clip_gradients, make_optimizer
from pixelrl.returns import episode_returns, normalize_returns
from pixelrl.run import Run


def make_policy(cfg, obs_space, action_space) -> ActorCritic:
    a = cfg.algo
    with_value = a.psi == "baseline" and a.baseline == "value"
    return ActorCritic(cfg.model, obs_space, action_space.n, with_value=with_value)


def check(cfg) -> None:
    """REINFORCE's combinations of keys (called by the app with the other config checks)."""
    a = cfg.algo
    if a.collector == "workers":
        reason = episode_workers.unsupported_reason(cfg)
        if reason is not None:
            raise ConfigError(f"algo.collector=workers is not possible here: {reason}")
    if a.num_envs > a.batch_episodes:
        raise ConfigError(
            f"algo.num_envs={a.num_envs} must be <= algo.batch_episodes={a.batch_episodes}: "
            "every episode of a batch is played by the same policy"
        )
    if episode_workers.wanted(cfg):  # one process per env
        check_process_count("algo.num_envs", a.num_envs, episode_workers.WORKER_BYTES, 8)


def uses_running_mean(a) -> bool:
    return a.psi == "baseline" and a.baseline == "running_mean"


def batch_targets(episodes: list[dict], a, running_mean: float | None):
    """(returns, Psi) per episode; the running-mean baseline is subtracted here, a learned
    V(s) at gradient time."""
    returns = [episode_returns(ep["rewards"], a.psi, a.gamma, a.reset_on_reward) for ep in episodes]
    psi = [g.copy() for g in returns]
    if uses_running_mean(a) and running_mean is not None:
        psi = [g - running_mean for g in psi]
    return returns, psi


def accumulate_gradients(net, episodes: list[dict], a, running_mean, device) -> dict:
    """Add the policy-gradient loss of `episodes` to the parameters' .grad (summed over every step,
    pg-pong's grad_buffer), forward/backward in chunks of update_chunk samples."""
    returns, psi = batch_targets(episodes, a, running_mean)
    obs = np.concatenate([ep["obs"] for ep in episodes])
    chunks = range(0, len(obs), a.update_chunk)

    def chunk(i: int) -> torch.Tensor:
        return torch.as_tensor(obs[i : i + a.update_chunk], device=device)

    actions = torch.as_tensor(np.concatenate([ep["actions"] for ep in episodes]), device=device)
    returns_t = torch.as_tensor(np.concatenate(returns), dtype=torch.float32, device=device)
    if a.psi == "baseline" and a.baseline == "value":  # Psi = G - V(s), normalized afterwards
        with torch.no_grad():
            values = torch.cat([net(chunk(i))[1] for i in chunks]).cpu().numpy()
        psi = [
            g - v
            for g, v in zip(returns, np.split(values, np.cumsum(list(map(len, returns)))[:-1]))
        ]
    psi_t = torch.as_tensor(
        np.concatenate(normalize_returns(psi, a.normalize_returns)),
        dtype=torch.float32,
        device=device,
    )
    totals: dict[str, float] = {}
    for i in chunks:
        sl = slice(i, i + a.update_chunk)
        logits, value = net(chunk(i))
        loss, m = policy_gradient_loss(
            logits,
            actions[sl],
            psi_t[sl],
            value,
            returns_t[sl] if value is not None else None,
            entropy_coef=a.entropy_coef,
            value_coef=a.value_coef,
            reduction="sum",
        )
        loss.backward()
        for k, v in m.items():  # losses are sums, entropy a mean: keep sums, divide by steps later
            totals[k] = totals.get(k, 0.0) + float(v) * (len(logits) if k == "entropy" else 1.0)
    totals["batch_steps"] = float(len(obs))
    return totals


def train(run: Run) -> None:
    cfg, a, device = run.cfg, run.cfg.algo, run.device
    if episode_workers.wanted(cfg):
        source = episode_workers.EpisodeWorkers(cfg, cfg.seed)
    else:

        def gradient(episodes, running_mean):
            return accumulate_gradients(net, episodes, a, running_mean, device)

        def returns_sum(rewards) -> float:
            return float(episode_returns(rewards, a.psi, a.gamma, a.reset_on_reward).sum())

        source = BatchedEpisodes(
            cfg, cfg.seed, gradient, returns_sum if uses_running_mean(a) else None
        )
    try:
        run.set_spaces(source.observation_space, source.action_space)
        net = make_policy(cfg, source.observation_space, source.action_space).to(device)
        _train(run, source, net)
    finally:
        source.close()


def _train(run: Run, source, net) -> None:
    cfg, a = run.cfg, run.cfg.algo
    optimizer = make_optimizer(a, net.parameters())
    schedule = LinearLR(a, cfg.total_frames)
    frames = run.start_frames
    extra = run.resume.get("extra", {}) if run.resume else {}
    running_reward = extra.get("running_reward")
    running_mean = extra.get("baseline_mean")
    episodes_done = int(extra.get("episodes", 0))
    if run.resume:
        restore_learner(run.resume, {"policy": net}, {"policy": optimizer})
    source.start(net)
    act = act_fn(net, run.device)

    def state():
        extra = {"running_reward": running_reward, "baseline_mean": running_mean}
        return learner_state(
            {"policy": net}, {"policy": optimizer}, **extra, episodes=episodes_done
        )

    batch: dict[str, float] = {}

    def on_episode(length: int, raw_return: float, reward_sum: float, returns_sum: float) -> None:
        nonlocal running_reward, episodes_done, frames
        frames += length * source.frames_per_step
        episodes_done += 1
        # pg-pong's running reward: 0.99 * previous + 0.01 * this episode's return
        running_reward = (
            raw_return if running_reward is None else 0.99 * running_reward + 0.01 * raw_return
        )
        run.tracker.episode(
            frames,
            raw_return,
            length,
            **{"train/running_reward": running_reward, "train/episodes": episodes_done},
        )
        batch["episodes"] += 1
        batch["reward_sum"] += reward_sum
        batch["returns_sum"] += returns_sum
        batch["steps"] += length

    while not run.done(frames):
        optimizer.zero_grad(set_to_none=True)
        batch.update(episodes=0, reward_sum=0.0, returns_sum=0.0, steps=0)
        totals = source.play(net, running_mean, on_episode, stop=lambda: bool(run.stop))
        if totals is None:  # stopped inside the batch: no update from part of one
            break
        metrics = {k: v / totals["batch_steps"] for k, v in totals.items() if k != "batch_steps"}
        metrics["batch_steps"] = totals["batch_steps"]
        metrics.update(clip_gradients(net.parameters(), a.max_grad_norm))
        metrics["lr"] = schedule.apply(optimizer, frames)
        optimizer.step()
        metrics["batch_return"] = batch["reward_sum"] / max(1, batch["episodes"])
        if uses_running_mean(a):
            batch_mean = batch["returns_sum"] / max(1, batch["steps"])
            d = a.baseline_decay
            running_mean = (
                batch_mean if running_mean is None else d * running_mean + (1 - d) * batch_mean
            )
        run.step_done(frames, metrics, act, state)
    run.finish(frames, act, state)
