"""What every training loop shares: the run context (dirs, device, tracker, checkpoints,
evaluation), schedules, seeding and graceful stops.

An algorithm's `train(run)` reads `run.cfg`, builds its env and networks, and calls
`run.step_done(frames, ...)` after each update: that one call logs progress, evaluates, records
videos and checkpoints on their schedules, and tells the loop when to stop. Because that call
also hands over the learner's `state()`, the run can write a checkpoint after a fault (a dead
worker) that ended the loop from inside.
"""

from __future__ import annotations

import math
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from pixelrl import checkpoint
from pixelrl.averaging import WeightAverage
from pixelrl.errors import TrainingError
from pixelrl.evaluate import SELECT_SEED_OFFSET, Evaluator, GaveUp, act_fn, stalled_note
from pixelrl.tracking import Tracker


def solve_from_checkpoint(payload: dict, cfg: DictConfig) -> dict | None:
    """A resumed run's first solve ({frames, time_s, return_mean}), if it had one and that
    evaluation also reaches this command's eval.target_return."""
    solved = payload.get("solved")
    target = cfg.eval.target_return
    if not solved or target is None or solved["return_mean"] < target:
        return None
    return solved


def past_solve(solved: dict | None, frames: int, cfg: DictConfig) -> bool:
    """Whether a run at `frames` is done with its first solve: eval.frames_past_target past it."""
    return solved is not None and frames >= solved["frames"] + cfg.eval.frames_past_target


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Every:
    """True once each time `frames` crosses a multiple of `every` (0 = never)."""

    def __init__(self, every: int, start: int = 0):
        self.every = int(every)
        self.next = (start // self.every + 1) * self.every if self.every > 0 else math.inf

    def __call__(self, frames: int) -> bool:
        if frames < self.next:
            return False
        self.next = (frames // self.every + 1) * self.every
        return True


class StopFlag:
    """First Ctrl-C / SIGTERM asks the loop to stop after the current update (a final checkpoint
    is written); a second Ctrl-C aborts at once. A SIGINT that arrives within `repeat_s` of the
    first is the same request delivered twice (`timeout -s INT` signals the process and then its
    whole group), not a second Ctrl-C."""

    repeat_s = 0.25

    def __init__(self):
        self.signum: int | None = None
        self._at = 0.0
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            if signum == signal.SIGINT and time.monotonic() - self._at > self.repeat_s:
                raise KeyboardInterrupt
            return
        self.signum, self._at = signum, time.monotonic()
        name = signal.Signals(signum).name
        print(
            f"\n{name}: stopping after this update and saving a checkpoint (Ctrl-C again aborts)",
            flush=True,
        )

    def __bool__(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return 128 + self.signum if self.signum else 0


class Run:
    """Context handed to an algorithm's train()."""

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        device: torch.device,
        resume: dict | None = None,
        group: str | None = None,
        job_name: str | None = None,
        policy_factory: Callable[[Any, Any], torch.nn.Module] | None = None,
    ):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = device
        self.resume = resume
        self.stop = StopFlag()
        start_frames = int(resume["frames"]) if resume else 0
        start_time = float(resume.get("time_s", 0.0)) if resume else 0.0
        self.start_frames = start_frames
        self.tracker = Tracker(
            self.run_dir, cfg, start_frames, start_time, group=group, job_name=job_name
        )
        self.evaluator = Evaluator(cfg, self.run_dir)
        # read at every step: a DictConfig read costs microseconds, these attributes nanoseconds
        self._total_frames = int(cfg.total_frames)
        self._loss_every_s = float(cfg.logger.fps_every_s)
        self._eval_every = Every(cfg.eval.every_frames, start_frames)
        self._ckpt_every = Every(cfg.checkpoint.every_frames, start_frames)
        # values may be 0-d tensors on the GPU: summed there, read (one sync) only when flushed
        self._loss_sums: dict[str, float | torch.Tensor] = {}
        self._loss_counts: dict[str, int] = {}
        self._loss_count = 0
        self._last_loss_flush = time.monotonic()
        self.updates = int(resume.get("updates", 0)) if resume else 0
        self.checkpoint_path = self.run_dir / "checkpoints" / "last.pt"
        self.best_path = self.run_dir / "checkpoints" / "best.pt"
        self.target_path = self.run_dir / "checkpoints" / "target.pt"
        self.best_eval: float | None = resume.get("best_eval") if resume else None
        # eval.select_sticky_actions: past the solve, evaluations at that setting choose select.pt
        self.select_path = self.run_dir / "checkpoints" / "select.pt"
        self.best_select: float | None = resume.get("best_select") if resume else None
        self._select_evaluator: Evaluator | None = None
        self.spaces: dict[str, Any] | None = None
        # eval.average_frames: evaluations play the mean of the policy's recent weights, built
        # by policy_factory(obs_space, action_space); a copy every window/4 frames
        self._policy_factory = policy_factory
        window = int(cfg.eval.get("average_frames") or 0)
        self.average = WeightAverage(window) if window and policy_factory else None
        self._copy_every = Every(self.average.spacing if self.average else 0, start_frames)
        if self.average is not None and resume:
            self._restore_average(resume)
        self._eval_thread: threading.Thread | None = None
        self._eval_result = None
        self._eval_cancel = threading.Event()
        # {frames, time_s (of training), return_mean} of the first policy whose evaluation
        # reached eval.target_return: training stops there (or eval.frames_past_target later); a
        # resumed run remembers it, so it neither trains past it again nor counts a second solve
        self.solved: dict | None = solve_from_checkpoint(resume, cfg) if resume else None
        self._eval_waiting_said = False
        self._save_failed_said = False
        self._finished = False  # finish() has begun: no more training to go on with
        # the learner's latest state() and frame count, for a checkpoint after a fault
        self._state: Callable[[], dict[str, Any]] | None = None
        self.frames = start_frames
        if self.solved is not None and cfg.eval.frames_past_target:
            self._keep_solving_policy()

    def _restore_average(self, resume: dict) -> None:
        """A resumed run goes on averaging over the copies its last.pt holds; one written before
        they were saved starts collecting again, and says so."""
        saved = resume.get("average_copies")
        policy = resume["models"].get("policy")
        if saved is not None and isinstance(policy, dict):
            self.average.restore(saved, policy, before=self.start_frames)
            return
        self.tracker.message(
            "eval.average_frames: this checkpoint holds no copies of earlier weights; the "
            f"averaged policy starts again from the resumed ones ({self.average.window:,} frames "
            "until it averages over a whole window)"
        )

    def _keep_solving_policy(self) -> None:
        """A run that stopped at its solve, resumed to train past it: its best.pt is the solving
        policy (no earlier evaluation reached the target), kept as target.pt before it moves on."""
        if self.target_path.exists() or not self.best_path.exists():
            return
        best = checkpoint.load(self.best_path)
        if best["frames"] == self.solved["frames"]:
            checkpoint.save(self.target_path, best)

    def set_spaces(self, obs_space, action_space) -> None:
        """Record the env's spaces (they go into every checkpoint, for load_agent)."""
        self.spaces = checkpoint.spaces_to_dict(obs_space, action_space)

    # ----------------------------------------------------------------- schedule
    def done(self, frames: int) -> bool:
        if past_solve(self.solved, frames, self.cfg):
            return True
        return frames >= self._total_frames or bool(self.stop)

    def step_done(
        self,
        frames: int,
        losses: dict[str, Any] | None,
        act: Callable[[np.ndarray], np.ndarray],
        state: Callable[[], dict[str, Any]],
        snapshot: Callable[[], Callable[[np.ndarray], np.ndarray]] | None = None,
    ) -> None:
        """After one update: progress, loss means, and evaluation / checkpoint when due.
        `state()` builds the checkpoint payload (models, optimizers, extra) only when needed.
        With `snapshot` (A3C), evaluation runs in a background thread on the policy that
        `snapshot()` freezes (it returns that policy's act function and its state), so the
        caller's loop never waits for it."""
        self._state, self.frames = state, frames
        if losses:
            self.updates += 1
            for k, v in losses.items():
                v = v.detach().float() if isinstance(v, torch.Tensor) else float(v)
                self._loss_sums[k] = self._loss_sums.get(k, 0.0) + v
                self._loss_counts[k] = self._loss_counts.get(k, 0) + 1
            self._loss_count += 1
        self.tracker.progress(frames)
        if self._copy_every(frames):
            self.average.add(frames, state()["models"]["policy"])
        if self._loss_count and time.monotonic() - self._last_loss_flush >= self._loss_every_s:
            self.flush_losses(frames)
        self.poll_background_eval()
        if self._eval_every(frames) and self._eval_wanted(frames):
            played_act, played_state = act, state
            if self.average is not None:  # a new network: it can play in the background too
                played_act, played_state = self.averaged_policy(frames, state)
                snapshot = snapshot and (lambda: (played_act, played_state))
            if snapshot is None:
                self.evaluate(frames, played_act, played_state, periodic=True)
            else:
                self.evaluate_in_background(frames, snapshot)
        if self._ckpt_every(frames):
            self.save(frames, state(), periodic=True)

    def flush_losses(self, frames: int) -> None:
        if not self._loss_count:
            return
        means = {f"losses/{k}": float(v) / self._loss_counts[k] for k, v in self._loss_sums.items()}
        means["charts/updates"] = self.updates
        self.tracker.log(frames, means)
        self._loss_sums.clear()
        self._loss_counts.clear()
        self._loss_count = 0
        self._last_loss_flush = time.monotonic()

    # ----------------------------------------------------------------- evaluation
    def averaged_policy(self, frames: int, state: Callable[[], dict[str, Any]]):
        """eval.average_frames: the policy whose weights are the mean of the learner's weights now
        and of its copies from the last average_frames frames, as (act, state) for evaluation and
        best.pt (the policy only, with how many weight sets it averages)."""
        weights, sets = self.average.mean(frames, state()["models"]["policy"])
        policy = self._policy_factory(*checkpoint.spaces_from_payload({"spaces": self.spaces}))
        policy.load_state_dict(weights)
        policy = policy.to(self.device).eval()
        payload = {
            "models": {"policy": {k: v.cpu() for k, v in weights.items()}},
            "extra": {"average_frames": self.average.window, "averaged_weight_sets": sets},
        }
        return act_fn(policy, self.device), lambda: payload

    def _selecting(self) -> bool:
        """Past the solve, with eval.select_sticky_actions: evaluations choose select.pt."""
        e = self.cfg.eval
        return (
            self.solved is not None
            and bool(e.frames_past_target)
            and e.get("select_sticky_actions") is not None
        )

    def _evaluator(self, select: bool) -> Evaluator:
        if not select:
            return self.evaluator
        if self._select_evaluator is None:
            sticky = float(self.cfg.eval.select_sticky_actions)
            self._select_evaluator = Evaluator(
                self.cfg, self.run_dir, sticky=sticky, seed_offset=SELECT_SEED_OFFSET
            )
        return self._select_evaluator

    def _play_eval(
        self, frames: int, act, cancelled, periodic: bool, select: bool = False
    ) -> tuple[list[float], list[int], int, Path | None] | GaveUp | None:
        """The evaluation's episodes and video; None if `cancelled()` turned true meanwhile;
        GaveUp if a periodic one could no longer reach eval.target_return (eval.max_return).
        `select`: one of the evaluations that choose select.pt (`_selecting()`)."""
        # past the solve (eval.frames_past_target) every evaluation plays to the end: a real mean
        may_give_up = periodic and self.solved is None
        evaluator = self._evaluator(select)
        played = evaluator.evaluate(act, cancelled=cancelled, may_give_up=may_give_up)
        if played is None or isinstance(played, GaveUp):
            return played
        video = None
        if self.cfg.video.enabled:
            video = evaluator.video(act, f"eval_{frames:011d}", cancelled=cancelled)
        return (played.returns, played.lengths, played.stalled, video)

    def _eval_wanted(self, frames: int) -> bool:
        """eval.min_train_return: periodic evaluations wait for the training return to reach it."""
        floor = self.cfg.eval.min_train_return
        recent = self.tracker.recent_returns
        if floor is None or (recent and sum(recent) / len(recent) >= floor):
            return True
        if not self._eval_waiting_said:
            self._eval_waiting_said = True
            self.tracker.message(
                f"eval @ {frames:,} frames skipped: periodic evaluations wait until the mean "
                f"return of the last {recent.maxlen} training episodes reaches {floor:g} "
                "(eval.min_train_return)"
            )
        return False

    def _log_eval(
        self, frames: int, time_s: float, played, state, select: bool = False
    ) -> dict | None:
        """Log one evaluation of the policy as it was at `frames` / `time_s` (training clock);
        a new best mean return writes checkpoints/best.pt with that policy's `state()` (with
        `select`, eval_select/* and select.pt instead)."""
        if select:
            return self._record_eval(frames, time_s, played, state, select=True)[0]
        if isinstance(played, GaveUp):
            # eval/steps: agent steps each env copy played before it stopped (what it cost)
            self.tracker.log(
                frames, {"eval/return_bound": played.bound, "eval/steps": played.steps}
            )
            self.tracker.message(
                f"eval @ {frames:,} frames stopped after {played.steps:,} steps "
                f"({played.episodes} episodes done): its mean can reach at most "
                f"{played.bound:.2f} < {self.cfg.eval.target_return:g} (eval.max_return)"
            )
            return None
        metrics, payload = self._record_eval(frames, time_s, played, state, select=False)
        mean = metrics["eval/return_mean"]
        target = self.cfg.eval.target_return
        if target is not None and self.solved is None and mean >= target:
            self.solved = {"frames": frames, "time_s": time_s, "return_mean": mean}
            self.tracker.log(
                frames, {"eval/target_frames": frames, "eval/target_minutes": time_s / 60}
            )
            past = self.cfg.eval.frames_past_target
            then = (
                f"training on for {past:,} frames (eval.frames_past_target)" if past else "stopping"
            )
            self.tracker.message(
                f"target reached: eval return {mean:.2f} >= {target:g} "
                f"with the policy of {frames:,} frames, {time_s / 60:.1f} min of training; {then}"
            )
            if past:  # best.pt may move on: the solving policy stays in target.pt
                payload = payload or {**state(), "eval": metrics, "eval_time_s": time_s}
                self.save(frames, payload, self.target_path)
        return metrics

    def _record_eval(
        self, frames: int, time_s: float, played, state, select: bool
    ) -> tuple[dict, dict | None]:
        """Log one played evaluation (metrics, message, video); a new best mean of its kind is
        saved, to best.pt, or with `select` (eval.select_sticky_actions) to select.pt. Returns
        the metrics and the payload saved (None: no new best)."""
        returns, lengths, stalled, video = played
        prefix = "eval_select" if select else "eval"
        metrics = self.tracker.evaluation(frames, returns, lengths, prefix, stalled)
        mean = metrics[f"{prefix}/return_mean"]
        setting = (
            f" at sticky actions {self.cfg.eval.select_sticky_actions:g} "
            "(eval.select_sticky_actions)"
            if select
            else ""
        )
        self.tracker.message(
            f"eval @ {frames:,} frames{setting}: return {mean:.2f} "
            f"± {metrics[f'{prefix}/return_std']:.2f} over {len(returns)} episodes"
            + stalled_note(stalled, self.cfg.eval.max_steps_without_reward)
        )
        if video is not None:
            self.tracker.video(frames, video)
        best = self.best_select if select else self.best_eval
        if best is not None and mean <= best:
            return metrics, None
        payload = {**state(), "eval": metrics, "eval_time_s": time_s}
        if select:
            self.best_select = mean
        else:
            self.best_eval = mean
        self.save(frames, payload, self.select_path if select else self.best_path)
        return metrics, payload

    def evaluate(
        self, frames: int, act: Callable[[np.ndarray], np.ndarray], state, periodic: bool = False
    ) -> dict | None:
        """Evaluate now (a stop signal cancels it, a hopeless periodic one gives up: None)."""
        time_s, select = self.tracker.elapsed_s, self._selecting()
        played = self._play_eval(frames, act, lambda: bool(self.stop), periodic, select)
        return None if played is None else self._log_eval(frames, time_s, played, state, select)

    def evaluate_in_background(self, frames: int, snapshot) -> None:
        if self._eval_thread is not None and self._eval_thread.is_alive():
            self.tracker.message(
                f"eval @ {frames:,} frames skipped: the previous one is still running"
            )
            return
        (act, state), time_s = snapshot(), self.tracker.elapsed_s
        select = self._selecting()

        def job():
            try:
                cancelled = self._eval_cancel.is_set
                played = self._play_eval(frames, act, cancelled, periodic=True, select=select)
                self._eval_result = (
                    None if played is None else (frames, time_s, played, state, select)
                )
            except Exception as e:  # reported by the main thread
                self._eval_result = e

        self._eval_cancel.clear()
        self._eval_thread = threading.Thread(target=job, name="pixelrl-eval", daemon=True)
        self._eval_thread.start()

    def poll_background_eval(self, wait: bool = False) -> None:
        """Log a finished background evaluation (from the main thread: W&B is not thread-safe).
        `wait` after a stop signal cancels it instead: a stop must not wait for 10 games."""
        if self._eval_thread is None:
            return
        if wait:
            if self.stop:
                self._eval_cancel.set()
            self._eval_thread.join()
        if self._eval_thread.is_alive():
            return
        result, self._eval_result, self._eval_thread = self._eval_result, None, None
        if isinstance(result, Exception):
            raise result
        if result is not None:
            self._log_eval(*result)

    # ----------------------------------------------------------------- checkpoints
    def save(
        self, frames: int, state: dict[str, Any], path: Path | None = None, periodic: bool = False
    ) -> Path | None:
        """Write a checkpoint (default: last.pt). A failed periodic or best.pt write (disk full)
        is reported once and training goes on (the previous file is intact; the next save tries
        again); the final save raises TrainingError. After training, a failed best.pt, target.pt
        or average.pt write is reported each time, and the run still ends normally."""
        path = path or self.checkpoint_path
        payload = {
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "frames": int(frames),
            "updates": int(self.updates),
            "time_s": float(self.tracker.elapsed_s),
            "rng": checkpoint.rng_state(),
            "spaces": self.spaces,
            "best_eval": self.best_eval,
            "best_select": self.best_select,
            "solved": self.solved,
            **state,
        }
        if self.average is not None and path == self.checkpoint_path:  # resume goes on averaging
            payload["average_copies"] = self.average.payload()
        try:
            checkpoint.save(path, payload)
        except OSError as e:
            why = e.strerror or type(e).__name__
            if not periodic and path == self.checkpoint_path:
                raise TrainingError(
                    f"checkpoint: could not write {path} ({why}); the previous one is kept"
                ) from None
            if not self._save_failed_said or self._finished:  # once while training
                self._save_failed_said = True
                then = (
                    f"{self.checkpoint_path.name} holds the run"
                    if self._finished
                    else "training goes on, the previous file is kept, and the next save tries again"
                )
                self.tracker.message(f"checkpoint: could not write {path} ({why}); {then}")
            return None
        if periodic:
            checkpoint.keep_newest(path.parent, path, frames, self.cfg.checkpoint.keep)
        return path

    def save_after_fault(self, error: BaseException) -> Path | None:
        """A checkpoint of the learner as it is after `error` ended the loop (a worker died; the
        shared model is intact), marked with the fault. None if there is nothing to save."""
        if self._state is None:
            return None
        try:
            self.poll_background_eval(wait=False)
        except Exception:
            pass
        try:
            return self.save(self.frames, {**self._state(), "fault": str(error)})
        except Exception:  # the fault may have taken the learner's state with it
            return None

    def finish(self, frames: int, act, state: Callable[[], dict[str, Any]]) -> None:
        """End of training (normal or interrupted): flush, checkpoint, final evaluation."""
        self._state, self.frames, self._finished = state, frames, True
        self.flush_losses(frames)
        self.poll_background_eval(wait=True)
        path = self.save(frames, state())
        self.tracker.message(f"checkpoint: {path}")
        if self.average is not None:  # from here on `act` and `state` are the averaged policy's
            act, state = self.averaged_policy(frames, state)
            sets = state()["extra"]["averaged_weight_sets"]
            average = self.save(frames, state(), self.checkpoint_path.with_name("average.pt"))
            if average is not None:  # a failed write was reported by save()
                self.tracker.message(
                    f"checkpoint: {average} (the mean of {sets} weight sets over the last "
                    f"{self.average.window:,} frames, eval.average_frames)"
                )
        evaluated = self.tracker.last_eval_frames == frames  # a periodic one just did
        stopped_at_target = self.solved is not None and not self.cfg.eval.frames_past_target
        if not self.stop and not stopped_at_target and self.cfg.eval.final and not evaluated:
            self.evaluate(frames, act, state)

    def close(self) -> None:
        self.evaluator.close()
        if self._select_evaluator is not None:
            self._select_evaluator.close()
        self.tracker.close()
