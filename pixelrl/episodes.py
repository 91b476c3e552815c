"""Playing whole episodes for Monte-Carlo policy gradients, with the policy in the learner.

`BatchedEpisodes` is one of REINFORCE's two episode sources (the other, for one-hidden-layer
MLPs, is `pixelrl.episode_workers`). Both offer the same interface to the algorithm:

    source.start(net)                                   once, before the first batch
    totals = source.play(net, running_mean, on_episode) one batch of `algo.batch_episodes`
                                                        episodes; their gradient ends up in the
                                                        parameters' .grad
    source.close()

`on_episode(length, raw_return, reward_sum, returns_sum)` sees every finished episode. Here the
envs run in worker processes (any backend) and the forward passes are batched in the learner;
the gradient itself is the algorithm's `gradient_fn(episodes, running_mean) -> totals`.

Speed without changing the algorithm: the batch's episodes run at once on `num_envs` envs; an env
whose episode ended waits for the next batch, so each update sees exactly the episodes pg-pong would
have played, by the same policy. Where the backend can step each worker process's block of envs
on its own, actions for one block are computed while the others step, and, like pg-pong's
grad_buffer, each finished episode's gradient is accumulated right away in a background thread
(unless returns are standardized over the whole batch), so the update at the end costs ~nothing.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import numpy as np
import torch

from pixelrl.envs import TRAIN, make_vector_env
from pixelrl.models import sample_actions

GradientFn = Callable[[list[dict], "float | None"], dict[str, float]]


class GradientStream:
    """Accumulates finished episodes' gradients in a background thread while envs still play."""

    def __init__(self, gradient_fn: GradientFn):
        self.gradient_fn = gradient_fn
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
                for k, v in self.gradient_fn([ep], self.running_mean).items():
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
        self.masked = envs.can_pause
        # block steps carry no episodic-life signal: with it, envs step together
        self.blocks = envs.blocks is not None and not env_cfg.get("episodic_life", False)
        self.wait = wait
        self.clip = train and bool(env_cfg.get("clip_rewards", False))
        self._started = False
        self._pending: set[int] = set()
        self._ready: dict[int, np.ndarray] = {}  # blocks stepped but not yet given new actions
        self._carry: list[tuple[dict, float]] = []  # episodes that ended past a full batch

    def play(self, policy, device, episodes: int, on_episode, stop=lambda: False) -> list[dict]:
        """Play until `episodes` episodes have ended; `on_episode(episode, raw_return)` sees each.
        Returns early (with what has ended) once `stop()` is true."""
        self.policy, self.device, self.on_episode, self.target = (
            policy,
            device,
            on_episode,
            episodes,
        )
        self.stop = stop
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
        self._ready = {b: obs[ids] for b, ids in enumerate(self.envs.blocks)} if self.blocks else {}
        self._pending = set()
        self._started = True

    def _full(self) -> bool:
        return (not self.wait and len(self.done) >= self.target) or self.stop()

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
        envs = self.envs

        def send(block: int, block_obs: np.ndarray) -> None:
            ids = envs.blocks[block]
            if self._full():
                self._ready[block] = block_obs  # acts again after the update, with the new policy
            elif self.active[ids].any():
                envs.step_block_async(block, self._act(block_obs, ids), self.active[ids].copy())
                self._pending.add(block)

        ready, self._ready = self._ready, {}
        for block, block_obs in ready.items():
            send(block, block_obs)
        while self._pending and not self._full():
            block, (block_obs, reward, terminated, truncated, _) = envs.wait_any_block(
                self._pending
            )
            self._pending.discard(block)
            self._after_step(envs.blocks[block], reward, terminated, truncated)
            send(block, block_obs)


class BatchedEpisodes:
    """Envs in worker processes (or in-process), the policy batched in the learner: any network.
    `returns_sum(rewards)` (or None) gives an episode's returns summed, for a running-mean
    baseline."""

    def __init__(self, cfg, seed: int, gradient_fn: GradientFn, returns_sum=None):
        self.cfg, self.a = cfg, cfg.algo
        self.gradient_fn, self.returns_sum = gradient_fn, returns_sum
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
            self.stream = GradientStream(self.gradient_fn)

    def play(self, net, running_mean, on_episode, stop=lambda: False) -> dict[str, float] | None:
        """Play one batch; its gradient ends up in the parameters' .grad. None when `stop()`
        turns true first (a stop signal does not wait for the batch)."""
        a = self.a

        def finished(episode: dict, raw_return: float) -> None:
            rewards = episode["rewards"]
            returns_sum = self.returns_sum(rewards) if self.returns_sum else 0.0
            on_episode(len(rewards), raw_return, float(rewards.sum()), returns_sum)
            if self.stream is not None:
                self.stream.jobs.put(episode)

        threads = torch.get_num_threads()
        # Batch-of-few forward passes are tiny: one thread while env processes run, or torch's
        # thread pool spins against them for the same cores.
        torch.set_num_threads(1 if self.collector.masked else threads)
        if self.stream is not None:
            self.stream.running_mean = running_mean
        try:
            episodes = self.collector.play(net, self.device, a.batch_episodes, finished, stop)
        finally:
            torch.set_num_threads(threads)
        if stop():
            if self.stream is not None:
                self.stream.drain()
            return None
        if self.stream is not None:
            return self.stream.drain()
        return self.gradient_fn(episodes, running_mean)

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        self.envs.close()
