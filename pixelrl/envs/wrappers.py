"""Small, ordered frame transforms (single env) and the vector-level training signals.

Single-env wrappers are composed in an explicit chain by each env family (see atari.py).
`EpisodeSignals` sits on top of any vector backend and gives every algorithm the same view:
raw episode returns in `info["episode"]`, episodic-life terminations and clipped rewards for
training, and `info["final_obs"]` as one array.
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorWrapper

from pixelrl.errors import ConfigError


@functools.cache
def opencv():
    """cv2, imported on first use: a run whose frames are never resized or recoloured here (Catch,
    Reach, Atari on ale_vector) skips its import, 0.08-0.13 s of every start-up (2-core EPYC)."""
    import cv2

    cv2.setNumThreads(1)  # envs run in many processes/threads already; opencv's own pool contends
    return cv2


class ResizeFrame(gym.ObservationWrapper):
    """(H, W) or (H, W, C) uint8 -> (size, size[, C]) with cv2.INTER_AREA (the DQN/AtariPreprocessing choice)."""

    def __init__(self, env: gym.Env, size: int):
        super().__init__(env)
        self.size = size
        old = env.observation_space
        shape = (size, size) + tuple(old.shape[2:])
        self.observation_space = gym.spaces.Box(0, 255, shape, np.uint8)

    def observation(self, frame: np.ndarray) -> np.ndarray:
        if frame.shape[:2] == (self.size, self.size):
            return frame
        cv2 = opencv()
        return cv2.resize(frame, (self.size, self.size), interpolation=cv2.INTER_AREA)


class ChannelsFirst(gym.ObservationWrapper):
    """(H, W) -> (1, H, W); (H, W, C) -> (C, H, W)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        shape = env.observation_space.shape
        new = (1, *shape) if len(shape) == 2 else (shape[2], shape[0], shape[1])
        self.observation_space = gym.spaces.Box(0, 255, new, np.uint8)

    def observation(self, frame: np.ndarray) -> np.ndarray:
        if frame.ndim == 2:
            return frame[None]
        return np.ascontiguousarray(frame.transpose(2, 0, 1))


class FrameStack(gym.Wrapper):
    """Stack the last k channel-first frames along axis 0, oldest first.

    At reset the stack is filled with copies of the first frame, as gymnasium's
    FrameStackObservation(padding_type="reset") and the DQN code do.
    """

    def __init__(self, env: gym.Env, k: int):
        super().__init__(env)
        self.k = k
        c, h, w = env.observation_space.shape
        self.channels = c
        self._stack = np.zeros((k * c, h, w), np.uint8)
        self.observation_space = gym.spaces.Box(0, 255, (k * c, h, w), np.uint8)

    def reset(self, **kwargs):
        frame, info = self.env.reset(**kwargs)
        self._stack[:] = np.tile(frame, (self.k, 1, 1))
        return self._stack.copy(), info

    def step(self, action):
        frame, reward, terminated, truncated, info = self.env.step(action)
        c = self.channels
        self._stack[:-c] = self._stack[c:]
        self._stack[-c:] = frame
        return self._stack.copy(), reward, terminated, truncated, info


class EpisodeSignals(VectorWrapper):
    """The vector-level view every algorithm trains on, the same for every backend.

    - `info["episode"] = {"r": raw return, "l": length in agent steps}` with mask
      `info["_episode"]`, set when a *real* episode ends (game over or time limit), before any
      clipping: the numbers users compare are raw game scores.
    - `episodic_life`: a lost life becomes `terminated=True` for the learner while the game goes
      on (the DQN/A3C trick); needs `info["lives"]` from the backend.
    - `clip_rewards`: reward -> sign(reward) for the learner.
    - `info["final_obs"]`: an (N, ...) array; rows of envs that ended hold their last
      observation, others the current one.

    Backends that run envs in worker processes (`procs`) can also hold envs still and step one
    worker's envs on their own (`can_pause`, `blocks`, `step_block_async`, `wait_any_block`);
    block steps return the backend's raw signals: no episode stats, episodic life or clipping.
    """

    def __init__(
        self, env: gym.vector.VectorEnv, episodic_life: bool = False, clip_rewards: bool = False
    ):
        super().__init__(env)
        self.episodic_life = episodic_life
        self.clip_rewards = clip_rewards
        n = env.num_envs
        self._returns = np.zeros(n, np.float64)
        self._lengths = np.zeros(n, np.int64)
        self._lives = np.zeros(n, np.int64)
        self.default_seed: int | None = None  # used by the first reset() without a seed
        self._seeded = False
        # env ids per worker process, for block stepping; None where the backend cannot
        self.blocks: list[np.ndarray] | None = getattr(env, "blocks", None)
        self.can_pause = self.blocks is not None  # step(actions, active=mask)
        self._pending = None  # what step_wait calls to finish a step_async

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        if seed is None and not self._seeded:
            seed = self.default_seed
        self._seeded = True
        # gymnasium's partial reset: only the envs where options["reset_mask"] is True start over
        mask = (options or {}).get("reset_mask")
        fresh = slice(None) if mask is None else np.asarray(mask, bool)
        obs, info = self.env.reset(seed=seed, options=options)
        self._returns[fresh] = 0
        self._lengths[fresh] = 0
        if "lives" in info:
            self._lives[fresh] = np.asarray(info["lives"])[fresh]
        return obs, info

    def step(self, actions, active: np.ndarray | None = None):
        """`active` (where `can_pause`) steps a subset of envs; the others stand still."""
        if active is None:
            out = self.env.step(actions)
        else:
            out = self.env.step(actions, active=active)
        return self._signals(*out, active)

    def step_async(self, actions) -> None:
        """Start a step of every env and return at once where the backend can (ale-py's C++ vector
        env, gymnasium's AsyncVectorEnv); elsewhere the step runs in `step_wait`. The caller may
        compute meanwhile: the policy acts for another group of envs (`pixelrl.rollout.collect`)."""
        if self._pending is not None:
            raise RuntimeError("step_async called twice without step_wait")
        backend = self.env
        if hasattr(backend, "send") and hasattr(backend, "recv"):
            actions = np.asarray(actions)
            backend.send(actions)
            # held until the step ends, in case the backend reads the buffer meanwhile
            self._pending = functools.partial(_received, backend, actions)
        elif isinstance(backend, gym.vector.AsyncVectorEnv):
            backend.step_async(actions)
            self._pending = backend.step_wait
        else:
            self._pending = functools.partial(backend.step, actions)

    def step_wait(self):
        """The step that `step_async` started: what `step` would have returned."""
        if self._pending is None:
            raise RuntimeError("step_wait called without step_async")
        finish, self._pending = self._pending, None
        return self._signals(*finish(), None)

    def _signals(self, obs, reward, terminated, truncated, info, active):
        reward = np.asarray(reward, np.float64)
        terminated = np.asarray(terminated, bool)
        truncated = np.asarray(truncated, bool)
        done = terminated | truncated
        self._returns += reward
        self._lengths += 1 if active is None else active
        if done.any():
            info = dict(info)
            info["episode"] = {"r": self._returns.copy(), "l": self._lengths.copy()}
            info["_episode"] = done.copy()
            info["final_obs"] = _final_obs_array(obs, info, done)
            self._returns[done] = 0
            self._lengths[done] = 0
        if self.episodic_life and "lives" in info:
            lives = np.asarray(info["lives"], np.int64)
            life_lost = (lives < self._lives) & ~done
            terminated = terminated | life_lost
            self._lives[:] = lives
        if self.clip_rewards:
            reward = np.sign(reward)
        return obs, reward.astype(np.float32), terminated, truncated, info

    def call(self, name: str, *args, **kwargs):
        return self.env.call(name, *args, **kwargs)

    def step_block_async(self, block: int, actions: np.ndarray, active: np.ndarray | None = None):
        """Send actions to the envs of one worker process (`blocks[block]`), without waiting."""
        self.env.step_block_async(block, actions, active)

    def wait_any_block(self, pending: set[int]) -> tuple[int, tuple]:
        """(block, (obs, reward, terminated, truncated, final_obs)) of the first of `pending` to
        finish its step (raw signals, same-step autoreset)."""
        return self.env.wait_any_block(pending)


def _received(backend, _actions):
    return backend.recv()


def _final_obs_array(obs: np.ndarray, info: dict[str, Any], done: np.ndarray) -> np.ndarray:
    final = info.get("final_obs")
    if isinstance(final, np.ndarray) and final.dtype != object and final.shape == obs.shape:
        return final
    out = obs.copy()
    if final is not None:
        for i in np.flatnonzero(done):
            if final[i] is not None:
                out[i] = final[i]
    return out


def _action_map(actions: list[int], n: int) -> np.ndarray:
    if not actions or any(not 0 <= a < n for a in actions):
        raise ConfigError(
            f"env.action_set={list(actions)} must list actions of the env, 0..{n - 1}"
        )
    return np.asarray(actions, np.int64)


class ActionSubset(gym.ActionWrapper):
    """Let the agent choose among a subset of the env's actions (pg-pong: UP=2, DOWN=3)."""

    def __init__(self, env: gym.Env, actions: list[int]):
        super().__init__(env)
        self._map = _action_map(actions, env.action_space.n)
        self.action_space = gym.spaces.Discrete(len(actions))

    def action(self, action):
        return int(self._map[int(action)])


class VectorActionSubset(VectorWrapper):
    """ActionSubset for vector backends that cannot be wrapped per env (ale_vector)."""

    def __init__(self, env: gym.vector.VectorEnv, actions: list[int]):
        super().__init__(env)
        self._map = _action_map(actions, env.single_action_space.n)
        self.single_action_space = gym.spaces.Discrete(len(actions))
        self.action_space = gym.spaces.MultiDiscrete([len(actions)] * env.num_envs)

    def step(self, actions):
        return self.env.step(self._map[np.asarray(actions, np.int64)])

    def send(self, actions) -> None:  # the backend's asynchronous step, as EpisodeSignals uses it
        self.env.send(self._map[np.asarray(actions, np.int64)])

    def recv(self):
        return self.env.recv()
