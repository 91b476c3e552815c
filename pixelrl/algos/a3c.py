"""A3C: Asynchronous Advantage Actor-Critic (Mnih et al. 2016, arXiv:1602.01783).

`num_workers` actor-learner processes each copy the shared model, play `n_steps` on their own envs,
compute the actor-critic loss (Psi = n-step advantage or GAE, entropy bonus, value loss) and apply
their gradients lock-free to the one shared-memory model (Hogwild) through an optimizer whose
statistics are shared too (shared RMSProp, the paper's most robust choice, or shared Adam).
The main process owns the frame counter, logs, checkpoints and evaluates in a background thread.

Pitfalls handled on purpose: one torch thread per worker; spawn, not fork; a shared step count
for Adam and a lock around step(); workers ignore Ctrl-C (the main process stops them) and exit
if the main process disappears. `num_workers=0` runs the same learner serially in-process.
"""

from __future__ import annotations

import contextlib
import os
import time

import torch
from omegaconf import OmegaConf

from pixelrl.checkpoint import learner_state, restore_learner
from pixelrl.config import settings
from pixelrl.device import check_process_count, use_bf16
from pixelrl.dormant import recycle_dormant
from pixelrl.envs import EVAL, TRAIN, make_vector_env, with_sticky_actions
from pixelrl.errors import ConfigError
from pixelrl.evaluate import act_fn
from pixelrl.models import ActorCritic
from pixelrl.optim import LinearLR, clip_gradients, make_optimizer
from pixelrl.rollout import collect, rollout_losses
from pixelrl.run import Run, seed_everything
from pixelrl.workers import WorkerGroup, parent_alive, report_errors, worker_setup

TRACK_WEIGHT_CHANGE_EVERY = 25  # updates between measurements of the largest weight change
WORKER_BYTES = 400 << 20  # a spawned worker imports torch and holds its envs: ~0.3-0.4 GiB
WORKERS_PER_CPU = 4
RECYCLE_SAMPLE = 25  # updates whose last observations make the sample a recycling check scores


def check(cfg) -> None:
    """A3C's keys that the schema cannot judge alone: how many processes this machine holds."""
    check_process_count("algo.num_workers", cfg.algo.num_workers, WORKER_BYTES, WORKERS_PER_CPU)
    mix = list(cfg.algo.get("worker_sticky_actions") or [])
    if mix and "sticky_actions" not in cfg.env:
        raise ConfigError(
            f"algo.worker_sticky_actions is for Atari envs (repeat_action_probability); "
            f"env={cfg.env.name} has no sticky actions: leave it []"
        )
    if cfg.algo.env_groups != 1:
        raise ConfigError(
            f"algo.env_groups={cfg.algo.env_groups} is A2C's (algo=actor_critic): an A3C worker "
            "steps its envs in one group, the workers already keep the cores busy"
        )
    if any(not 0.0 <= float(p) <= 1.0 for p in mix):
        raise ConfigError(f"algo.worker_sticky_actions={mix} must hold probabilities in [0, 1]")


def worker_env(cfg, rank: int):
    """Worker `rank`'s env config: cfg.env, at its entry of algo.worker_sticky_actions if any."""
    mix = cfg.algo.get("worker_sticky_actions") or []
    return with_sticky_actions(cfg.env, mix[rank % len(mix)] if mix else None)


def make_policy(cfg, obs_space, action_space) -> ActorCritic:
    return ActorCritic(cfg.model, obs_space, action_space.n)


class Learner:
    """One actor-learner: its own envs and local network, updating the shared model."""

    def __init__(self, rank: int, cfg, shared: ActorCritic, optimizer, lock, frames_value):
        a = self.a = settings(cfg.algo)
        self.cfg, self.rank, self.shared, self.optimizer = cfg, rank, shared, optimizer
        self.lock, self.frames_value = lock, frames_value
        seed_everything(cfg.seed + rank)
        self.envs = make_vector_env(worker_env(cfg, rank), a.num_envs, mode=TRAIN, num_threads=1)
        spaces = self.envs.single_observation_space, self.envs.single_action_space
        self.net = make_policy(cfg, *spaces)
        obs, _ = self.envs.reset(seed=cfg.seed + rank * a.num_envs)
        self.obs = torch.as_tensor(obs)
        self.frames_per_update = a.n_steps * a.num_envs * self.envs.frames_per_step
        self.bf16 = use_bf16(a.precision, torch.device("cpu"), cfg.model.trunk != "mlp")
        self.schedule = LinearLR(a, cfg.total_frames)
        self.updates = 0
        self.recent_obs: list[torch.Tensor] = []  # for algo.recycle_every
        self.recycled: list[int] = []

    def update(self, global_frames: int) -> dict:
        a = self.a
        self.net.load_state_dict(self.shared.state_dict())
        episodes: list[tuple[float, int]] = []

        def on_episodes(info, _t):
            if "_episode" in info:
                for i in info["_episode"].nonzero()[0]:
                    episodes.append((float(info["episode"]["r"][i]), int(info["episode"]["l"][i])))

        cpu = torch.device("cpu")
        rollout, self.obs = collect(
            self.net, self.envs, self.obs, a.n_steps, cpu, on_episodes, self.bf16, a.epochs > 1
        )
        track = self.updates % TRACK_WEIGHT_CHANGE_EVERY == 0
        recycle = self._recycle_sample()
        losses = rollout_losses(self.net, rollout, a, cpu, self.bf16)
        for epoch, (loss, metrics) in enumerate(losses):
            self.net.zero_grad(set_to_none=True)
            loss.backward()
            metrics.update(clip_gradients(self.net.parameters(), a.max_grad_norm))
            lr = self.schedule.apply(self.optimizer, global_frames)
            grads = [p.grad for p in self.net.parameters()]
            last = epoch == a.epochs - 1
            with self.lock or contextlib.nullcontext():
                change = self.optimizer.step(grads, track=track and last)
                if recycle is not None and last:  # under the lock: no step interleaves
                    self.recycled = recycle_dormant(
                        self.shared, recycle, self.optimizer, a.recycle_tau, a.recycle_scope
                    )
            if not last:  # the next pass's forward starts from the shared weights as they are
                self.net.load_state_dict(self.shared.state_dict())
        self.updates += 1
        out = {k: float(v) for k, v in metrics.items()}
        out["lr"] = lr
        if track:
            out["max_weight_change"] = change
        if recycle is not None:
            for layer, n in enumerate(self.recycled):
                out[f"recycled_units_{layer}"] = n
        return {
            "type": "update",
            "rank": self.rank,
            "frames": self.frames_per_update,
            "episodes": episodes,
            "metrics": out,
        }

    def _recycle_sample(self) -> torch.Tensor | None:
        """The frames to score dormant units on when this update is a recycling one, else None;
        keeps the last observations of the RECYCLE_SAMPLE updates before each such update."""
        every = self.a.recycle_every
        if not every:
            return None
        due = (self.updates + 1) % every == 0
        if (self.updates + 1) % every > every - RECYCLE_SAMPLE or due:
            self.recent_obs.append(self.obs.clone())
        if not due:
            return None
        sample, self.recent_obs = torch.cat(self.recent_obs), []
        return sample

    def close(self) -> None:
        self.envs.close()


def _worker_main(rank, cfg_dict, shared, optimizer, lock, results, stop, frames_value, parent_pid):
    """Entry point of a spawned worker process."""
    worker_setup(parent_pid)
    torch.set_num_threads(1)  # else workers oversubscribe the cores and serialize
    torch.set_flush_denormal(True)  # a spawned process starts without the main one's setting
    with report_errors(rank, results):
        learner = Learner(rank, OmegaConf.create(cfg_dict), shared, optimizer, lock, frames_value)
        try:
            while not stop.is_set() and parent_alive(parent_pid):
                results.put(learner.update(frames_value.value))
        finally:
            learner.close()
        results.cancel_join_thread()  # stopping: don't wait for the main process to read the rest


def train(run: Run) -> None:
    cfg, a = run.cfg, run.cfg.algo
    probe = make_vector_env(cfg.env, 1, mode=EVAL)
    obs_space, act_space = probe.single_observation_space, probe.single_action_space
    probe.close()
    run.set_spaces(obs_space, act_space)
    shared = make_policy(cfg, obs_space, act_space)
    optimizer = make_optimizer(a, shared.parameters())
    if run.resume:
        restore_learner(run.resume, {"policy": shared}, {"policy": optimizer})
    shared.share_memory()
    frames = run.start_frames
    eval_device = run.device

    def snapshot():
        """The shared model as it is now: its act function and its state (for best.pt)."""
        frozen = make_policy(cfg, obs_space, act_space)
        frozen.load_state_dict(shared.state_dict())
        weights = learner_state({"policy": frozen}, {})
        return act_fn(frozen.to(eval_device).eval(), eval_device), lambda: weights

    def state():
        return learner_state({"policy": shared}, {"policy": optimizer})

    worker_frames = [0] * max(1, a.num_workers)
    worker_clock = [time.monotonic(), list(worker_frames)]

    def record(msg) -> int:
        nonlocal frames
        frames += msg["frames"]
        worker_frames[msg["rank"]] += msg["frames"]
        elapsed = time.monotonic() - worker_clock[0]
        if elapsed >= cfg.logger.fps_every_s and a.num_workers > 1:  # per-worker speed
            rates = {
                f"charts/worker{r}_fps": round((f - f0) / elapsed, 1)
                for r, (f, f0) in enumerate(zip(worker_frames, worker_clock[1]))
            }
            run.tracker.log(frames, rates)
            worker_clock[0], worker_clock[1] = time.monotonic(), list(worker_frames)
        for ret, length in msg["episodes"]:
            run.tracker.episode(frames, ret, length)
        return frames

    if a.num_workers == 0:  # the same learner, serially, evaluating inline: for debugging
        learner = Learner(0, cfg, shared, optimizer, None, None)
        act = act_fn(shared, torch.device("cpu"))
        try:
            while not run.done(frames):
                msg = learner.update(frames)
                record(msg)
                run.step_done(frames, msg["metrics"], act, state)
        finally:
            learner.close()
        run.finish(frames, act, state)
        return

    torch.set_num_threads(1)  # the workers own the cores; the main process only evaluates
    ctx = torch.multiprocessing.get_context("spawn")
    group = WorkerGroup(ctx, "a3c worker")
    lock = ctx.Lock()
    frames_value = ctx.Value("q", frames, lock=False)
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    shared_args = (shared, optimizer, lock, group.results, group.stop_event, frames_value)
    args = [(rank, cfg_dict, *shared_args, os.getpid()) for rank in range(a.num_workers)]
    group.start(_worker_main, args, "a3c-worker")
    try:
        while not run.done(frames):
            msg = group.get()
            if msg is None:
                run.poll_background_eval()
                run.tracker.progress(frames)
                continue
            record(msg)
            frames_value.value = frames
            run.step_done(frames, msg["metrics"], None, state, snapshot=snapshot)
    finally:
        group.stop()
    run.finish(frames, snapshot()[0], state)
