"""REINFORCE (Williams 1992), and Karpathy's "Pong from Pixels" as a preset of it.

Monte-Carlo policy gradient: after every `batch_episodes` finished episodes, all played by the same
policy, one update with
    g = sum over episodes, steps of  Psi_t * grad log pi(a_t | s_t)
where Psi_t is the seed's choice 1 (`total`: the whole return), 2 (`reward_to_go`) or 3
(`baseline`: reward-to-go minus a learned V(s_t) or a running mean), optionally restarted at every
nonzero reward (`reset_on_reward`, Pong) and standardized per episode or per batch.

Speed without changing the algorithm: the batch's episodes run at once on `num_envs` envs with one
batched forward pass per step; an env whose episode ended waits (procs backend) or its extra steps
are discarded, and every batch starts from fresh episodes, so each update sees exactly the episodes
pg-pong would have played, sample for sample, by the same policy.
"""

from __future__ import annotations

import numpy as np
import torch

from pixelrl.envs import TRAIN, make_vector_env
from pixelrl.evaluate import act_fn
from pixelrl.losses import policy_gradient_loss
from pixelrl.models import ActorCritic
from pixelrl.returns import reward_to_go, standardize, total_return
from pixelrl.run import Run, linear_lr, set_lr


def make_policy(cfg, obs_space, action_space) -> ActorCritic:
    a = cfg.algo
    with_value = a.psi == "baseline" and a.baseline == "value"
    return ActorCritic(cfg.model, obs_space, action_space.n, with_value=with_value)


def episode_psi(rewards: np.ndarray, a) -> np.ndarray:
    """Returns before baselines: choice 1 (total) or 2/3 (reward-to-go)."""
    if a.psi == "total":
        return total_return(rewards, a.gamma, a.reset_on_reward)
    return reward_to_go(rewards, a.gamma, a.reset_on_reward)


class EpisodeCollector:
    """Plays one batch of episodes on a vector env, one batched forward pass per step.

    Per step it stores whole batch arrays (no per-env Python work); an episode's rows are gathered
    once, when it ends. obs are kept as uint8 or float16 (exact for pg-pong's -1/0/1).
    """

    def __init__(self, envs, masked: bool):
        self.envs = envs
        self.masked = masked
        self.n = envs.num_envs
        dtype = envs.single_observation_space.dtype
        self.storage = np.uint8 if dtype == np.uint8 else np.float16

    def play(self, policy, device, episodes: int, on_episode) -> list[dict]:
        """Reset every env, then play until `episodes` episodes have ended (each env plays at most
        ceil(episodes / n) of them, all with `policy` as it is now)."""
        obs, _ = self.envs.reset()
        n = self.n
        quota = np.array([episodes // n + (1 if i < episodes % n else 0) for i in range(n)])
        active = quota > 0
        started = active.astype(np.int64)
        start = np.zeros(n, np.int64)  # step index where each env's current episode began
        steps_obs, steps_act, steps_rew = [], [], []
        done_eps: list[dict] = []
        t = 0
        while active.any():
            with torch.no_grad():
                logits, _ = policy(torch.as_tensor(obs, device=device))
                actions = torch.distributions.Categorical(logits=logits).sample().cpu().numpy()
            steps_obs.append(obs.astype(self.storage, copy=True))
            steps_act.append(actions)
            if self.masked:
                obs, reward, terminated, truncated, info = self.envs.step(actions, active=active)
            else:
                obs, reward, terminated, truncated, info = self.envs.step(actions)
            steps_rew.append(np.asarray(reward, np.float32))
            ended = (terminated | truncated) & active
            for i in np.flatnonzero(ended):
                rows = range(start[i], t + 1)
                ep = {
                    "obs": np.stack([steps_obs[k][i] for k in rows]),
                    "actions": np.array([steps_act[k][i] for k in rows]),
                    "rewards": np.array([steps_rew[k][i] for k in rows]),
                }
                raw = (
                    info["episode"]["r"][i]
                    if "_episode" in info and info["_episode"][i]
                    else ep["rewards"].sum()
                )
                on_episode(float(raw), len(rows))
                done_eps.append(ep)
                start[i] = t + 1
                if started[i] < quota[i]:
                    started[i] += 1
                else:
                    active[i] = False
            t += 1
        return done_eps


def batch_targets(episodes: list[dict], a, running_mean: float | None):
    """Psi and value targets for a batch, before the baseline's V(s) (applied at update time)."""
    returns = [episode_psi(ep["rewards"], a) for ep in episodes]
    psi = [g.copy() for g in returns]
    if a.psi == "baseline" and a.baseline == "running_mean" and running_mean is not None:
        psi = [g - running_mean for g in psi]
    return returns, psi


def normalize(psi: list[np.ndarray], mode: str) -> list[np.ndarray]:
    if mode == "episode":
        return [standardize(p) for p in psi]
    if mode == "batch":
        flat = standardize(np.concatenate(psi))
        out, i = [], 0
        for p in psi:
            out.append(flat[i : i + len(p)])
            i += len(p)
        return out
    return psi


def train(run: Run) -> None:
    cfg, a, device = run.cfg, run.cfg.algo, run.device
    backend = cfg.env.backend
    masked = backend == "procs"
    if backend in ("async",):
        backend = "procs"  # the only multi-process backend that lets finished envs wait
        masked = True
    envs = make_vector_env(cfg.env, a.num_envs, mode=TRAIN, backend=backend)
    envs.default_seed = cfg.seed
    run.set_spaces(envs.single_observation_space, envs.single_action_space)
    net = make_policy(cfg, envs.single_observation_space, envs.single_action_space).to(device)
    if a.optimizer == "adam":
        optimizer = torch.optim.Adam(net.parameters(), lr=a.lr, eps=a.eps)
    else:  # pg-pong: cache = decay * cache + (1 - decay) g^2; w += lr g / (sqrt(cache) + eps)
        optimizer = torch.optim.RMSprop(net.parameters(), lr=a.lr, alpha=a.rmsprop_alpha, eps=a.eps)
    frames = run.start_frames
    extra = run.resume.get("extra", {}) if run.resume else {}
    running_reward = extra.get("running_reward")
    running_mean = extra.get("baseline_mean")
    episodes_done = int(extra.get("episodes", 0))
    if run.resume:
        net.load_state_dict(run.resume["models"]["policy"])
        optimizer.load_state_dict(run.resume["optimizers"]["policy"])
    collector = EpisodeCollector(envs, masked)
    act = act_fn(net, device)

    def state():
        return {
            "models": {"policy": net.state_dict()},
            "optimizers": {"policy": optimizer.state_dict()},
            "extra": {
                "running_reward": running_reward,
                "baseline_mean": running_mean,
                "episodes": episodes_done,
            },
        }

    def on_episode(ret: float, length: int) -> None:
        nonlocal running_reward, episodes_done, frames
        frames += length * envs.frames_per_step
        episodes_done += 1
        # pg-pong's running reward: 0.99 * previous + 0.01 * this episode's return
        running_reward = ret if running_reward is None else 0.99 * running_reward + 0.01 * ret
        run.tracker.episode(
            frames,
            ret,
            length,
            **{"train/running_reward": running_reward, "train/episodes": episodes_done},
        )

    learner_threads = torch.get_num_threads()
    try:
        while not run.done(frames):
            # While env worker processes run, batch-of-10 forward passes are tiny: one thread, or
            # torch's thread pool spins against the env processes for the same cores.
            torch.set_num_threads(1 if masked else learner_threads)
            net.eval()
            episodes = collector.play(net, device, a.batch_episodes, on_episode)
            net.train()
            torch.set_num_threads(learner_threads)
            metrics = update(net, optimizer, episodes, a, running_mean, device)
            if a.psi == "baseline" and a.baseline == "running_mean":
                batch_mean = float(
                    np.mean(np.concatenate([episode_psi(ep["rewards"], a) for ep in episodes]))
                )
                d = a.baseline_decay
                running_mean = (
                    batch_mean if running_mean is None else d * running_mean + (1 - d) * batch_mean
                )
            lr = linear_lr(a.lr, frames, cfg.total_frames, a.lr_decay)
            set_lr(optimizer, lr)
            metrics["lr"] = lr
            run.step_done(frames, metrics, act, state)
        run.finish(frames, act, state)
    finally:
        envs.close()


def update(net, optimizer, episodes: list[dict], a, running_mean, device) -> dict:
    """One gradient step from a batch of episodes, forward/backward in chunks of update_chunk
    samples, gradients summed over every step of every episode (pg-pong's grad_buffer)."""
    returns, psi = batch_targets(episodes, a, running_mean)
    obs = np.concatenate([ep["obs"] for ep in episodes])
    actions = torch.as_tensor(np.concatenate([ep["actions"] for ep in episodes]), device=device)
    returns_t = torch.as_tensor(np.concatenate(returns), dtype=torch.float32, device=device)
    learned_baseline = a.psi == "baseline" and a.baseline == "value"
    if not learned_baseline:
        psi_t = torch.as_tensor(
            np.concatenate(normalize(psi, a.normalize_returns)), dtype=torch.float32, device=device
        )
    else:  # Psi = G - V(s), normalized after the subtraction
        with torch.no_grad():
            values = torch.cat(
                [
                    net(_chunk(obs, i, a.update_chunk, device))[1]
                    for i in range(0, len(obs), a.update_chunk)
                ]
            )
        centered = [
            g - v
            for g, v in zip(
                returns, np.split(values.cpu().numpy(), np.cumsum([len(g) for g in returns])[:-1])
            )
        ]
        psi_t = torch.as_tensor(
            np.concatenate(normalize(centered, a.normalize_returns)),
            dtype=torch.float32,
            device=device,
        )
    optimizer.zero_grad(set_to_none=True)
    totals: dict[str, float] = {}
    for i in range(0, len(obs), a.update_chunk):
        sl = slice(i, i + a.update_chunk)
        logits, value = net(_chunk(obs, i, a.update_chunk, device))
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
        for k, v in m.items():  # losses are sums here, entropy a mean: report per-sample means
            totals[k] = totals.get(k, 0.0) + float(v) * (len(logits) if k == "entropy" else 1.0)
    metrics = {k: v / len(obs) for k, v in totals.items()}
    if a.max_grad_norm > 0:
        metrics["grad_norm"] = float(
            torch.nn.utils.clip_grad_norm_(net.parameters(), a.max_grad_norm)
        )
    optimizer.step()
    metrics["batch_steps"] = len(obs)
    metrics["batch_return"] = float(np.mean([ep["rewards"].sum() for ep in episodes]))
    return metrics


def _chunk(obs: np.ndarray, i: int, size: int, device) -> torch.Tensor:
    x = torch.as_tensor(obs[i : i + size], device=device)
    return x.float() if x.dtype == torch.float16 else x
