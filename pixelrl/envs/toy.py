"""Tiny pixel environments that need no ROM and no physics engine: learning tests run on them.

Catch (bsuite-style, discrete): a ball starts in a random column of the top row and falls one row
per step; the paddle on the bottom row moves left / stays / moves right. When the ball reaches the
bottom row the episode ends with +1 (caught) or -1 (missed). A uniformly random paddle scores about
-0.6; the optimal policy scores +1.

Reach (continuous): a dot is steered with a 2-D velocity action in [-1, 1]^2 towards a target in a
square arena; reward = -distance each step (plus a bonus when touching the target). Rendered as two
channels: the dot and the target.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class Catch(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    NUM_ACTIONS = 3  # left, stay, right

    def __init__(
        self, rows: int = 10, cols: int = 5, scale: int = 2, render_mode: str | None = None
    ):
        self.rows, self.cols, self.scale = rows, cols, scale
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0, 255, (1, rows * scale, cols * scale), np.uint8)
        self.action_space = gym.spaces.Discrete(self.NUM_ACTIONS)
        self._ball = (0, 0)
        self._paddle = cols // 2

    def _frame(self) -> np.ndarray:
        s = self.scale
        frame = np.zeros((1, self.rows * s, self.cols * s), np.uint8)
        for row, col in (self._ball, (self.rows - 1, self._paddle)):
            frame[0, row * s : (row + 1) * s, col * s : (col + 1) * s] = 255
        return frame

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._ball = (0, int(self.np_random.integers(self.cols)))
        self._paddle = self.cols // 2
        return self._frame(), {}

    def step(self, action):
        self._paddle = min(max(self._paddle + int(action) - 1, 0), self.cols - 1)
        row, col = self._ball
        self._ball = (row + 1, col)
        terminated = self._ball[0] == self.rows - 1
        reward = 0.0
        if terminated:
            reward = 1.0 if col == self._paddle else -1.0
        return self._frame(), reward, terminated, False, {}

    def render(self):
        frame = self._frame()[0]
        big = np.kron(frame, np.ones((8, 8), np.uint8))
        return np.repeat(big[:, :, None], 3, axis=2)


class Reach(gym.Env):
    """A dot steered towards a target; continuous actions, pixel observations."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, size: int = 32, max_steps: int = 50, render_mode: str | None = None):
        self.size = size
        self.max_steps = max_steps
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._pos = np.zeros(2)
        self._target = np.zeros(2)
        self._t = 0

    def _frame(self) -> np.ndarray:
        img = np.zeros((self.size, self.size, 3), np.uint8)
        for pos, channel in ((self._pos, 0), (self._target, 1)):
            r, c = np.clip(np.round(pos * (self.size - 1)).astype(int), 0, self.size - 1)
            img[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2, channel] = 255
        return img

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._pos = self.np_random.uniform(0.1, 0.9, 2)
        self._target = self.np_random.uniform(0.1, 0.9, 2)
        self._t = 0
        return self._frame(), {}

    def step(self, action):
        action = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        self._pos = np.clip(self._pos + 0.1 * action, 0.0, 1.0)
        self._t += 1
        dist = float(np.linalg.norm(self._pos - self._target))
        reward = -dist + (1.0 if dist < 0.05 else 0.0)
        return self._frame(), reward, False, self._t >= self.max_steps, {}

    def render(self):
        return np.kron(self._frame(), np.ones((8, 8, 1), np.uint8))


def register() -> None:
    if "pixelrl/Catch-v0" not in gym.registry:
        gym.register("pixelrl/Catch-v0", entry_point=Catch)
    if "pixelrl/Reach-v0" not in gym.registry:
        gym.register("pixelrl/Reach-v0", entry_point=Reach)
