"""REINFORCE (Williams 1992), and Karpathy's "Pong from Pixels" as a preset of it.

Monte-Carlo policy gradient: after every `batch_episodes` finished episodes, all played by the same
policy, one update with
    g = sum over episodes, steps of  Psi_t * grad log pi(a_t | s_t)
where Psi_t is the seed's choice 1 (`total`: the whole return), 2 (`reward_to_go`) or 3
(`baseline`: reward-to-go minus a learned V(s_t) or a running mean), optionally restarted at every
nonzero reward (`reset_on_reward`, Pong) and standardized per episode or per batch.

Speed without changing the algorithm: the batch's episodes run at once on `num_envs` envs; an env
whose episode ended waits for the next batch, so each update sees exactly the episodes pg-pong would
have played, by the same policy. With the `procs` backend each worker process's block of envs is
stepped on its own (actions for one block are computed while the others step), and, like pg-pong's
grad_buffer, each finished episode's gradient is accumulated right away in a background thread
(unless returns are standardized over the whole batch), so the update at the end costs ~nothing.
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import torch

from pixelrl.envs import TRAIN, make_vector_env
from pixelrl.envs.vector import ProcVectorEnv
from pixelrl.evaluate import act_fn
from pixelrl.losses import policy_gradient_loss
from pixelrl.models import ActorCritic, sample_actions
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


def batch_targets(episodes: list[dict], a, running_mean: float | None):
    """(returns, Psi) per episode; the running-mean baseline is subtracted here, a learned
    V(s) at gradient time."""
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
        return np.split(flat, np.cumsum([len(p) for p in psi])[:-1])
    return psi


def accumulate_gradients(net, episodes: list[dict], a, running_mean, device) -> dict:
    """Add the policy-gradient loss of `episodes` to the parameters' .grad (summed over every step,
    pg-pong's grad_buffer), forward/backward in chunks of update_chunk samples."""
    returns, psi = batch_targets(episodes, a, running_mean)
    obs = np.concatenate([ep["obs"] for ep in episodes])
    actions = torch.as_tensor(np.concatenate([ep["actions"] for ep in episodes]), device=device)
    returns_t = torch.as_tensor(np.concatenate(returns), dtype=torch.float32, device=device)
    if a.psi == "baseline" and a.baseline == "value":  # Psi = G - V(s), normalized afterwards
        with torch.no_grad():
            values = torch.cat(
                [
                    net(_chunk(obs, i, a.update_chunk, device))[1]
                    for i in range(0, len(obs), a.update_chunk)
                ]
            )
        psi = [
            g - v
            for g, v in zip(
                returns, np.split(values.cpu().numpy(), np.cumsum([len(g) for g in returns])[:-1])
            )
        ]
    psi_t = torch.as_tensor(
        np.concatenate(normalize(psi, a.normalize_returns)), dtype=torch.float32, device=device
    )
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
        for k, v in m.items():  # losses are sums, entropy a mean: keep sums, divide by steps later
            totals[k] = totals.get(k, 0.0) + float(v) * (len(logits) if k == "entropy" else 1.0)
    totals["batch_steps"] = float(len(obs))
    return totals


def _chunk(obs: np.ndarray, i: int, size: int, device) -> torch.Tensor:
    return torch.as_tensor(obs[i : i + size], device=device)


class GradientStream:
    """Accumulates finished episodes' gradients in a background thread while envs still play."""

    def __init__(self, net, a, device):
        self.net, self.a, self.device = net, a, device
        self.jobs: queue.Queue = queue.Queue()
        self.totals: dict[str, float] = {}
        self.error: BaseException | None = None
        self.running_mean = None
        self.thread = threading.Thread(target=self._loop, name="pixelrl-grad", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            ep = self.jobs.get()
            if ep is None:
                return
            try:
                for k, v in accumulate_gradients(
                    self.net, [ep], self.a, self.running_mean, self.device
                ).items():
                    self.totals[k] = self.totals.get(k, 0.0) + v
                ep["obs"] = None  # its gradient is in: free the frames (long Pong games are big)
            except BaseException as e:  # surfaced by drain()
                self.error = e
            finally:
                self.jobs.task_done()

    def drain(self) -> dict:
        self.jobs.join()
        if self.error is not None:
            raise self.error
        totals, self.totals = self.totals, {}
        return totals

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=5)


class EpisodeCollector:
    """Plays batches of episodes with the current policy.

    wait=True (exact): every batch starts from fresh episodes and an env that has played its share
    waits, so all episodes of a batch come from the same policy. wait=False (pipelined): envs never
    wait; a batch is the next `episodes` episodes to end, and those running across an update are
    finished by the updated policy (one update of lag, like A3C's, for ~30% more speed).
    """

    def __init__(self, envs, env_cfg, wait: bool = True, train: bool = True):
        self.envs = envs
        self.n = envs.num_envs
        base = getattr(envs, "env", envs)
        self.base = base
        self.masked = isinstance(base, ProcVectorEnv)
        self.blocks = self.masked and not env_cfg.get("episodic_life", False)
        self.wait = wait
        self.clip = train and bool(env_cfg.get("clip_rewards", False))
        self._started = False
        self._pending: set[int] = set()
        self._ready: dict[int, np.ndarray] = {}  # blocks stepped but not yet given new actions
        self._carry: list[tuple[dict, float]] = []  # episodes that ended past a full batch

    def play(self, policy, device, episodes: int, on_episode) -> list[dict]:
        """Play until `episodes` episodes have ended; `on_episode(episode, raw_return)` sees each."""
        self.policy, self.device, self.on_episode, self.target = (
            policy,
            device,
            on_episode,
            episodes,
        )
        self.done: list[dict] = []
        for episode, raw in self._carry:
            self._finish(episode, raw)
        self._carry = []
        if self.wait or not self._started:
            self._start(episodes)
        if self.blocks:
            self._play_blocks()
        else:
            self._play_sync()
        return self.done

    def _start(self, episodes: int) -> None:
        n = self.n
        if self.wait:
            self.quota = np.array(
                [episodes // n + (1 if i < episodes % n else 0) for i in range(n)]
            )
        else:
            self.quota = np.full(n, np.iinfo(np.int64).max)
        self.active = self.quota > 0
        self.started = self.active.astype(np.int64)
        self.eps = [{"obs": [], "actions": [], "rewards": [], "raw": 0.0} for _ in range(n)]
        obs, _ = self.envs.reset()
        self._obs = obs
        self._ready = {b: obs[ids] for b, ids in enumerate(self.base.blocks)} if self.blocks else {}
        self._pending = set()
        self._started = True

    def _full(self) -> bool:
        return not self.wait and len(self.done) >= self.target

    def _finish(self, episode: dict, raw: float) -> None:
        if self._full():
            self._carry.append((episode, raw))  # the next batch's
            return
        self.done.append(episode)
        self.on_episode(episode, raw)

    def _act(self, obs: np.ndarray, envs: np.ndarray) -> np.ndarray:
        """Sample actions for rows `envs` (global env ids) of obs and record obs/actions."""
        with torch.no_grad():
            logits, _ = self.policy(torch.as_tensor(obs, device=self.device))
            actions = sample_actions(logits).cpu().numpy()
        for row, i in enumerate(envs):  # obs arrays are fresh per step: keep row views, no copies
            if self.active[i]:
                self.eps[i]["obs"].append(obs[row])
                self.eps[i]["actions"].append(actions[row])
        return actions

    def _after_step(self, envs: np.ndarray, reward, terminated, truncated) -> None:
        for row, i in enumerate(envs):
            if not self.active[i]:
                continue
            ep = self.eps[i]
            r = float(reward[row])
            ep["raw"] += r
            ep["rewards"].append(np.sign(r) if self.clip else r)
            if terminated[row] or truncated[row]:
                episode = {
                    "obs": np.stack(ep["obs"]),
                    "actions": np.asarray(ep["actions"]),
                    "rewards": np.asarray(ep["rewards"], np.float64),
                }
                self.eps[i] = {"obs": [], "actions": [], "rewards": [], "raw": 0.0}
                if self.started[i] < self.quota[i]:
                    self.started[i] += 1
                else:
                    self.active[i] = False
                self._finish(episode, ep["raw"])

    def _play_sync(self) -> None:
        every = np.arange(self.n)
        while self.active.any() and not self._full():
            actions = self._act(self._obs, every)
            if self.masked:
                step = self.envs.step(actions, active=self.active.copy())
            else:  # other backends step every env; a waiting env's steps are simply not recorded
                step = self.envs.step(actions)
            self._obs, reward, terminated, truncated, _ = step
            self._after_step(every, reward, terminated, truncated)

    def _play_blocks(self) -> None:
        base = self.base

        def send(block: int, block_obs: np.ndarray) -> None:
            ids = base.blocks[block]
            if self._full():
                self._ready[block] = block_obs  # acts again after the update, with the new policy
            elif self.active[ids].any():
                base.step_block_async(block, self._act(block_obs, ids), self.active[ids].copy())
                self._pending.add(block)

        ready, self._ready = self._ready, {}
        for block, block_obs in ready.items():
            send(block, block_obs)
        while self._pending and not self._full():
            block, (block_obs, reward, terminated, truncated, _) = base.wait_any_block(
                self._pending
            )
            self._pending.discard(block)
            self._after_step(base.blocks[block], reward, terminated, truncated)
            send(block, block_obs)


class BatchedEpisodes:
    """Envs in worker processes (or in-process), the policy batched in the learner: any network."""

    def __init__(self, cfg, seed: int):
        self.cfg, self.a = cfg, cfg.algo
        backend = "procs" if cfg.env.backend == "async" else cfg.env.backend  # procs: envs can wait
        self.envs = make_vector_env(cfg.env, self.a.num_envs, mode=TRAIN, backend=backend)
        self.envs.default_seed = seed
        self.observation_space = self.envs.single_observation_space
        self.action_space = self.envs.single_action_space
        self.frames_per_step = self.envs.frames_per_step
        self.collector = EpisodeCollector(self.envs, cfg.env, wait=self.a.wait_for_batch)
        self.stream = None

    def start(self, net) -> None:
        self.device = next(net.parameters()).device
        if self.collector.masked and self.a.normalize_returns != "batch":
            self.stream = GradientStream(net, self.a, self.device)

    def play(self, net, running_mean, on_episode) -> dict[str, float]:
        """Play one batch; its gradient ends up in the parameters' .grad."""
        a, need_psi = self.a, uses_running_mean(self.a)

        def finished(episode: dict, raw_return: float) -> None:
            rewards = episode["rewards"]
            psi_sum = float(episode_psi(rewards, a).sum()) if need_psi else 0.0
            on_episode(len(rewards), raw_return, float(rewards.sum()), psi_sum)
            if self.stream is not None:
                self.stream.jobs.put(episode)

        threads = torch.get_num_threads()
        # Batch-of-few forward passes are tiny: one thread while env processes run, or torch's
        # thread pool spins against them for the same cores.
        torch.set_num_threads(1 if self.collector.masked else threads)
        if self.stream is not None:
            self.stream.running_mean = running_mean
        try:
            episodes = self.collector.play(net, self.device, a.batch_episodes, finished)
        finally:
            torch.set_num_threads(threads)
        if self.stream is not None:
            return self.stream.drain()
        return accumulate_gradients(net, episodes, a, running_mean, self.device)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        self.envs.close()


def uses_running_mean(a) -> bool:
    return a.psi == "baseline" and a.baseline == "running_mean"


def train(run: Run) -> None:
    from pixelrl.algos import episode_workers

    cfg = run.cfg
    if episode_workers.wanted(cfg):
        source = episode_workers.EpisodeWorkers(cfg, cfg.seed)
    else:
        source = BatchedEpisodes(cfg, cfg.seed)
    try:
        _train(run, source)
    finally:
        source.close()


def _train(run: Run, source) -> None:
    cfg, a, device = run.cfg, run.cfg.algo, run.device
    run.set_spaces(source.observation_space, source.action_space)
    net = make_policy(cfg, source.observation_space, source.action_space).to(device)
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
    source.start(net)
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

    batch: dict[str, float] = {}

    def on_episode(length: int, raw_return: float, reward_sum: float, psi_sum: float) -> None:
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
        batch["psi_sum"] += psi_sum
        batch["steps"] += length

    while not run.done(frames):
        optimizer.zero_grad(set_to_none=True)
        batch.update(episodes=0, reward_sum=0.0, psi_sum=0.0, steps=0)
        totals = source.play(net, running_mean, on_episode)
        metrics = {k: v / totals["batch_steps"] for k, v in totals.items() if k != "batch_steps"}
        metrics["batch_steps"] = totals["batch_steps"]
        if a.max_grad_norm > 0:
            metrics["grad_norm"] = float(
                torch.nn.utils.clip_grad_norm_(net.parameters(), a.max_grad_norm)
            )
        optimizer.step()
        metrics["batch_return"] = batch["reward_sum"] / max(1, batch["episodes"])
        if uses_running_mean(a):
            batch_mean = batch["psi_sum"] / max(1, batch["steps"])
            d = a.baseline_decay
            running_mean = (
                batch_mean if running_mean is None else d * running_mean + (1 - d) * batch_mean
            )
        lr = linear_lr(a.lr, frames, cfg.total_frames, a.lr_decay)
        set_lr(optimizer, lr)
        metrics["lr"] = lr
        run.step_done(frames, metrics, act, state)
    run.finish(frames, act, state)
