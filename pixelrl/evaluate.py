"""Evaluation and video: play greedy episodes on an eval-mode env (raw game score, no episodic
life, no reward clipping) and record mp4s from a rendering copy of the env."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from pixelrl.envs import EVAL, make_vector_env, with_sticky_actions
from pixelrl.video import VideoRecorder

ActFn = Callable[[np.ndarray], np.ndarray]

EVAL_SEED_OFFSET = 10_000  # eval envs never replay the training envs' seeds
# ... nor do the evaluations that choose a run's select.pt replay those of a later mode=eval
SELECT_SEED_OFFSET = 20_000


def act_fn(policy: torch.nn.Module, device: torch.device) -> ActFn:
    """numpy obs batch -> numpy greedy actions."""

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return policy.act(torch.as_tensor(obs, device=device), greedy=True).cpu().numpy()

    return act


def _never() -> bool:
    return False


@dataclass
class GaveUp:
    """An evaluation stopped once its mean return could no longer reach the target."""

    bound: float  # the highest mean return still possible when it stopped
    episodes: int  # episodes finished by then
    steps: int  # agent steps played (per env copy)


@dataclass
class Hopeless:
    """When an evaluation may stop early: its mean return must reach `target`, one episode's return
    is at most `max_return`, and every negative reward is final (Pong: a point conceded can't be
    won back, so an episode that has conceded k points ends at most max_return - k)."""

    target: float
    max_return: float

    def bound(self, returns: list[float], running_loss, left: np.ndarray) -> float:
        """The highest mean still possible: finished returns, each unfinished episode at most
        max_return minus what it has conceded, each episode not started at most max_return."""
        unfinished = left > 0
        best = sum(returns) + float(np.sum(self.max_return + running_loss[unfinished]))
        best += float(np.sum(left[unfinished] - 1)) * self.max_return
        return best / max(1, len(returns) + int(np.sum(left)))


class Played(NamedTuple):
    """A finished evaluation: raw returns and lengths, one per episode, how many of those
    episodes ended early for want of any reward (eval.max_steps_without_reward), and where the
    evaluation named them (eval.noop_sweep), the no-op start each one was played from."""

    returns: list[float]
    lengths: list[int]
    stalled: int = 0
    noop_starts: list[int] | None = None  # with `noop_starts`: each episode's, as its return


def stalled_note(stalled: int, max_quiet: int | None) -> str:
    """What a message about an evaluation adds when episodes ended for want of a reward."""
    if not stalled:
        return ""
    return (
        f" ({stalled} ended after {max_quiet:,} agent steps without a reward, scored as they "
        "stood: eval.max_steps_without_reward)"
    )


def play(
    act: ActFn,
    env,
    episodes: int,
    seed: int | None,
    cancelled: Callable[[], bool] = _never,
    hopeless: Hopeless | None = None,
    max_quiet: int | None = None,
    noop_starts: Sequence[int] | None = None,
) -> Played | GaveUp | None:
    """Play exactly `episodes` episodes, spread evenly over the env's copies (taking the first
    finishers instead would favour short episodes). Returns raw returns and lengths, or None
    once `cancelled()` is true (looked at every step: a stop never waits for whole games), or,
    with `hopeless`, GaveUp as soon as the mean can no longer reach its target.

    `max_quiet`: an episode that goes that many agent steps without a nonzero reward ends there
    with the return it has (its copy starts its next one; the env must take gymnasium's
    `reset_mask`). Greedy play with no sticky actions can fall into rallies that go on for
    thousands of steps, up to the time limit (Pong: 27,000 agent steps): that ends them sooner,
    though a point that would still have come is then not counted.

    `noop_starts`: each episode's no-op start (j in [0, env.noop_max): the env's j-th start, as
    `options["noop_start"]` defines it), in the order the episodes start (eval.noop_sweep). Every
    episode then starts with a reset of its own copy that names its start (the env must take
    `options["noop_start"]` and `reset_mask`)."""
    n = env.num_envs
    if noop_starts is not None and len(noop_starts) != episodes:
        raise ValueError(f"noop_starts names {len(noop_starts)} starts for {episodes} episodes")
    starts = None if noop_starts is None else iter(noop_starts)
    count = np.zeros(n, np.int64)  # with noop_starts: the start of each copy's current game
    counts: list[int] = []
    quota = np.array([episodes // n + (1 if i < episodes % n else 0) for i in range(n)])
    done = np.zeros(n, np.int64)
    conceded = np.zeros(n)  # the negative rewards of each copy's current episode
    # with max_quiet, the same episode's rewards, agent steps, and steps since its last reward
    running, length, quiet = np.zeros(n), np.zeros(n, np.int64), np.zeros(n, np.int64)
    returns: list[float] = []
    lengths: list[int] = []
    stalled = 0
    obs, _ = env.reset(seed=seed)
    if starts is not None:
        obs = _start_games(env, obs, quota > 0, starts, count)
    steps = 0
    while (done < quota).any():
        if cancelled():
            return None
        obs, reward, _, _, info = env.step(act(obs))
        steps += 1
        reward = np.asarray(reward, np.float64)
        conceded += np.minimum(reward, 0.0)
        if max_quiet is not None:  # what a game that stalls ends with
            running += reward
            length += 1
            quiet = np.where(reward != 0, 0, quiet + 1)
        ended = np.asarray(info["_episode"], bool) if "_episode" in info else np.zeros(n, bool)
        for i in np.flatnonzero(ended):
            if done[i] < quota[i]:
                returns.append(float(info["episode"]["r"][i]))
                lengths.append(int(info["episode"]["l"][i]))
                counts.append(int(count[i]))
            done[i] += 1
        if max_quiet is not None:
            stuck = (quiet >= max_quiet) & ~ended & (done < quota)
            for i in np.flatnonzero(stuck):
                returns.append(float(running[i]))
                lengths.append(int(length[i]))
                counts.append(int(count[i]))
                done[i] += 1
                stalled += 1
            ended |= stuck
        if starts is not None:  # every new game from its own start (after a stuck one too)
            obs = _start_games(env, obs, ended & (done < quota), starts, count)
        elif max_quiet is not None and (restart := stuck & (done < quota)).any():
            obs, _ = env.reset(options={"reset_mask": restart})
        conceded[ended] = running[ended] = length[ended] = quiet[ended] = 0
        if hopeless is not None:
            bound = hopeless.bound(returns, conceded, np.maximum(quota - done, 0))
            if bound < hopeless.target:
                return GaveUp(bound, len(returns), steps)
    return Played(returns, lengths, stalled, None if noop_starts is None else counts)


def _start_games(
    env, obs: np.ndarray, mask: np.ndarray, starts: Iterator[int], count: np.ndarray
) -> np.ndarray:
    """Start a game on each copy where `mask` is True, each from the next no-op start of
    `starts`, kept in `count` (one reset per copy: a vector env gives all copies the same options)."""
    for i in np.flatnonzero(mask):
        one = np.zeros(env.num_envs, bool)
        one[i] = True
        count[i] = next(starts)
        obs, _ = env.reset(options={"reset_mask": one, "noop_start": int(count[i])})
    return obs


def record(
    act: ActFn,
    env,
    path: Path,
    fps: int,
    max_steps: int | None,
    seed: int | None,
    cancelled: Callable[[], bool] = _never,
    max_quiet: int | None = None,
) -> tuple[Path | None, float, int]:
    """Record one episode of a 1-env rendering env, stopping early after max_steps agent steps
    (None: the whole episode), after `max_quiet` steps without a reward (as `play`), or when
    `cancelled()`. Returns the mp4 path, the (raw) return and the length."""
    recorder = VideoRecorder(fps)
    recorder.init(path)
    obs, _ = env.reset(seed=seed)
    recorder.record(env.call("render")[0])
    total, steps, quiet = 0.0, 0, 0
    while (max_steps is None or steps < max_steps) and not cancelled():
        obs, reward, _, _, info = env.step(act(obs))
        steps += 1
        if "_episode" in info and info["_episode"][0]:
            total = float(info["episode"]["r"][0])
            break
        total += float(reward[0])
        recorder.record(env.call("render")[0])
        quiet = 0 if reward[0] != 0 else quiet + 1
        if max_quiet is not None and quiet >= max_quiet:
            break
    return recorder.save(), total, steps


def eval_env_config(cfg, sticky: float | None = None):
    """The env config evaluations play: cfg.env, at `sticky` or else at eval.sticky_actions where
    either is set."""
    if sticky is None:
        sticky = cfg.eval.get("sticky_actions")
    return with_sticky_actions(cfg.env, sticky)


class Evaluator:
    """Owns the eval env and the video env (built once, reused at every evaluation). `sticky`
    and `seed_offset` make another one (eval.select_sticky_actions: other settings, other games)."""

    def __init__(
        self, cfg, run_dir: Path, sticky: float | None = None, seed_offset: int = EVAL_SEED_OFFSET
    ):
        self.cfg = cfg
        self.env_cfg = eval_env_config(cfg, sticky)
        self.seed_offset = seed_offset
        self.video_dir = Path(run_dir) / "videos"
        self._env = None
        self._video_env = None

    def evaluate(
        self,
        act: ActFn,
        episodes: int | None = None,
        cancelled: Callable[[], bool] = _never,
        may_give_up: bool = False,
    ) -> Played | GaveUp | None:
        """`may_give_up`: stop once eval.target_return is out of reach (needs eval.max_return)."""
        episodes = episodes or self.cfg.eval.episodes
        if self._env is None:
            n = max(1, min(self.cfg.eval.num_envs, episodes))
            self._env = make_vector_env(self.env_cfg, n, mode=EVAL)
        e = self.cfg.eval
        hopeless = None
        if may_give_up and e.target_return is not None and e.get("max_return") is not None:
            hopeless = Hopeless(float(e.target_return), float(e.max_return))
        seed = self.cfg.seed + self.seed_offset
        starts = None
        if e.get("noop_sweep"):  # 0, 1, ..., noop_max - 1, 0, 1, ...
            starts = [k % int(self.env_cfg.noop_max) for k in range(episodes)]
        return play(act, self._env, episodes, seed, cancelled, hopeless, self.max_quiet, starts)

    @property
    def max_quiet(self) -> int | None:
        return self.cfg.eval.get("max_steps_without_reward")

    def video(
        self, act: ActFn, name: str, seed_offset: int = 0, cancelled: Callable[[], bool] = _never
    ) -> Path | None:
        """A training-time clip: one episode, at most video.max_steps agent steps."""
        return self._record(act, name, seed_offset, self.cfg.video.max_steps, cancelled)[0]

    def watch(self, act: ActFn, name: str, seed_offset: int = 0) -> tuple[Path | None, float, int]:
        """A whole episode on video (mode=watch): path, raw return, length."""
        return self._record(act, name, seed_offset, None)

    def _record(self, act, name, seed_offset, max_steps, cancelled=_never):
        if self._video_env is None:
            self._video_env = make_vector_env(self.env_cfg, 1, mode=EVAL, render=True)
        fps = self.cfg.video.fps or self._video_env.video_fps
        seed = self.cfg.seed + self.seed_offset + seed_offset
        path = self.video_dir / f"{name}.mp4"
        return record(act, self._video_env, path, fps, max_steps, seed, cancelled, self.max_quiet)

    def close(self) -> None:
        for env in (self._env, self._video_env):
            if env is not None:
                env.close()
        self._env = self._video_env = None
