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

import os
import queue as queue_lib
import signal
import time
import traceback

import torch
from omegaconf import OmegaConf

from pixelrl.device import use_bf16
from pixelrl.envs import EVAL, TRAIN, make_vector_env
from pixelrl.evaluate import act_fn
from pixelrl.models import ActorCritic
from pixelrl.rollout import collect, loss_from_rollout
from pixelrl.run import Run, TrainingError, linear_lr, seed_everything
from pixelrl.shared_optim import make_shared_optimizer
from pixelrl.workers import check_workers, stop_workers

TRACK_WEIGHT_CHANGE_EVERY = 25  # updates between measurements of the largest weight change


def make_policy(cfg, obs_space, action_space) -> ActorCritic:
    return ActorCritic(cfg.model, obs_space, action_space.n)


class Learner:
    """One actor-learner: its own envs and local network, updating the shared model."""

    def __init__(self, rank: int, cfg, shared: ActorCritic, optimizer, lock, frames_value):
        a = cfg.algo
        self.cfg, self.rank, self.shared, self.optimizer = cfg, rank, shared, optimizer
        self.lock, self.frames_value = lock, frames_value
        seed_everything(cfg.seed + rank)
        self.envs = make_vector_env(cfg.env, a.num_envs, mode=TRAIN, num_threads=1)
        spaces = self.envs.single_observation_space, self.envs.single_action_space
        self.net = make_policy(cfg, *spaces)
        obs, _ = self.envs.reset(seed=cfg.seed + rank * a.num_envs)
        self.obs = torch.as_tensor(obs)
        self.frames_per_update = a.n_steps * a.num_envs * self.envs.frames_per_step
        self.bf16 = use_bf16(a.precision, torch.device("cpu"))
        self.updates = 0

    def update(self, global_frames: int) -> dict:
        a = self.cfg.algo
        self.net.load_state_dict(self.shared.state_dict())
        episodes: list[tuple[float, int]] = []

        def on_episodes(info, _t):
            if "_episode" in info:
                for i in info["_episode"].nonzero()[0]:
                    episodes.append((float(info["episode"]["r"][i]), int(info["episode"]["l"][i])))

        rollout, self.obs = collect(
            self.net, self.envs, self.obs, a.n_steps, torch.device("cpu"), on_episodes, self.bf16
        )
        loss, metrics = loss_from_rollout(rollout, a)
        self.net.zero_grad(set_to_none=True)
        loss.backward()
        if a.max_grad_norm > 0:
            metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(
                self.net.parameters(), a.max_grad_norm
            )
        lr = linear_lr(a.lr, global_frames, self.cfg.total_frames, a.lr_decay)
        grads = [p.grad for p in self.net.parameters()]
        track = self.updates % TRACK_WEIGHT_CHANGE_EVERY == 0
        if self.lock is not None:
            with self.lock:
                change = self.optimizer.step(grads, lr, track=track)
        else:
            change = self.optimizer.step(grads, lr, track=track)
        self.updates += 1
        out = {k: float(v) for k, v in metrics.items()}
        out["lr"] = lr
        if track:
            out["max_weight_change"] = change
        return {
            "type": "update",
            "rank": self.rank,
            "frames": self.frames_per_update,
            "episodes": episodes,
            "metrics": out,
        }

    def close(self) -> None:
        self.envs.close()


def _worker_main(
    rank, cfg_dict, shared, optimizer, lock, queue, stop, frames_value, parent_pid
) -> None:
    """Entry point of a spawned worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the main process, which stops us
    torch.set_num_threads(1)  # else workers oversubscribe the cores and serialize
    torch.set_flush_denormal(True)  # a spawned process starts without the main one's setting
    learner = None
    try:
        cfg = OmegaConf.create(cfg_dict)
        learner = Learner(rank, cfg, shared, optimizer, lock, frames_value)
        while not stop.is_set():
            if os.getppid() != parent_pid:  # the main process is gone: don't linger as an orphan
                break
            queue.put(learner.update(frames_value.value))
        queue.cancel_join_thread()  # stopping: don't wait for the main process to read the rest
    except Exception as e:
        queue.put(
            {
                "type": "error",
                "rank": rank,
                "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(),
            }
        )
        queue.close()
        queue.join_thread()  # make sure the error reaches the main process before we exit
        raise SystemExit(1) from None
    finally:
        if learner is not None:
            learner.close()


def train(run: Run) -> None:
    cfg, a = run.cfg, run.cfg.algo
    probe = make_vector_env(cfg.env, 1, mode=EVAL)
    obs_space, act_space = probe.single_observation_space, probe.single_action_space
    probe.close()
    run.set_spaces(obs_space, act_space)
    shared = make_policy(cfg, obs_space, act_space)
    optimizer = make_shared_optimizer(a, shared.parameters())
    if run.resume:
        shared.load_state_dict(run.resume["models"]["policy"])
        optimizer.load_state_dict(run.resume["optimizers"]["policy"])
    shared.share_memory()
    frames = run.start_frames
    eval_device = run.device

    def snapshot():
        frozen = make_policy(cfg, obs_space, act_space)
        frozen.load_state_dict(shared.state_dict())
        return act_fn(frozen.to(eval_device).eval(), eval_device)

    def state():
        return {
            "models": {"policy": shared.state_dict()},
            "optimizers": {"policy": optimizer.state_dict()},
        }

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
    queue, stop, lock = ctx.Queue(), ctx.Event(), ctx.Lock()
    frames_value = ctx.Value("q", frames, lock=False)
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    workers = []
    for rank in range(a.num_workers):
        p = ctx.Process(
            target=_worker_main,
            args=(rank, cfg_dict, shared, optimizer, lock, queue, stop, frames_value, os.getpid()),
            name=f"a3c-worker-{rank}",
            daemon=True,
        )
        p.start()
        workers.append(p)
    try:
        last_check = time.monotonic()
        while not run.done(frames):
            try:
                msg = queue.get(timeout=0.25)
            except queue_lib.Empty:
                msg = None
            if msg is None or time.monotonic() - last_check > 0.5:
                check_workers(workers, queue, "a3c worker")
                last_check = time.monotonic()
            if msg is None:
                run.poll_background_eval()
                run.tracker.progress(frames)
                continue
            if msg["type"] == "error":
                raise TrainingError(f"a3c worker {msg['rank']} failed: {msg['error']}")
            record(msg)
            frames_value.value = frames
            run.step_done(frames, msg["metrics"], None, state, snapshot=snapshot)
    finally:
        stop_workers(workers, queue, stop)
    run.finish(frames, snapshot(), state)
