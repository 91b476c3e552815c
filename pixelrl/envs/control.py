"""Continuous control from pixels: Pendulum rendered to pixels, CarRacing, the DeepMind Control
Suite and the toy Reach. Every env here yields uint8 (k*C, H, W) stacks and actions in a Box.

The control recipe, one explicit chain per family (DDPG paper from pixels; DrQ-v2):
    Pendulum   Pendulum-v1 -> action repeat -> render -> resize -> channels first -> stack k
    CarRacing  CarRacing-v3 (96x96 RGB) -> action repeat -> resize -> channels first -> stack k
    dmc        dm_control task, action repeat and rendering inside -> channels first -> stack k
    Reach      toy.Reach -> action repeat -> resize -> channels first -> stack k
Action repeat sums the rewards and renders once, after the last repeat. Frame stack 3 and action
repeat 2 are DrQ-v2's defaults (cartpole: 8 in the PlaNet-100k protocol). env.grayscale keeps one
channel per frame.
"""

from __future__ import annotations

import functools
import os

import gymnasium as gym
import numpy as np

from pixelrl.envs.wrappers import ChannelsFirst, FrameStack, ResizeFrame, opencv
from pixelrl.errors import ConfigError

# pygame (Pendulum, CarRacing) draws off-screen and never plays sound here; without dummy
# drivers SDL prints "XDG_RUNTIME_DIR is invalid" and ALSA errors on headless machines.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

GYM_IDS = {"Pendulum": "Pendulum-v1", "CarRacing": "CarRacing-v3"}
RENDERED = ("Pendulum-v1",)  # gymnasium envs whose observation is a state: we render pixels
VIDEO_SIZE = 256  # dmc video frames (observations are env.resolution)
BASE_FPS = {"Pendulum-v1": 30, "CarRacing-v3": 50, "Reach": 20, "dmc": 50}
DMC_EXTRA = "env=dmc needs the dm_control extra: pip install 'pixelrl[dmc]'"


class ActionRepeat(gym.Wrapper):
    """Repeat each action `repeat` times and sum the rewards; stop early when the episode ends."""

    def __init__(self, env: gym.Env, repeat: int):
        super().__init__(env)
        self.repeat = repeat

    def step(self, action):
        total = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            if terminated or truncated:
                break
        return obs, total, terminated, truncated, info


class RenderedPixels(gym.ObservationWrapper):
    """Replace a state observation by the env's rgb_array rendering, resized to size x size."""

    def __init__(self, env: gym.Env, size: int):
        super().__init__(env)
        self.size = size
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)

    def observation(self, _state) -> np.ndarray:
        frame, cv2 = self.env.render(), opencv()
        return cv2.resize(frame, (self.size, self.size), interpolation=cv2.INTER_AREA)


class Grayscale(gym.ObservationWrapper):
    def __init__(self, env: gym.Env):
        super().__init__(env)
        h, w = env.observation_space.shape[:2]
        self.observation_space = gym.spaces.Box(0, 255, (h, w), np.uint8)

    def observation(self, frame: np.ndarray) -> np.ndarray:
        cv2 = opencv()
        return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


# ------------------------------------------------------------------------------------ dm_control


def dmc_tasks() -> dict[str, tuple[str, str]]:
    """'<domain>_<task>' -> (domain, task) for every dm_control suite task."""
    try:
        os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering (EGL, Mesa on CPU)
        from dm_control import suite
    except ImportError:
        raise ConfigError(DMC_EXTRA) from None
    return {f"{d}_{t}": (d, t) for d, t in sorted(suite.ALL_TASKS)}


def check(env_cfg) -> None:
    """Raise ConfigError for an env config that cannot be built (bad task, missing extra)."""
    if env_cfg.kind == "dmc":
        tasks = dmc_tasks()
        if not env_cfg.task:
            raise ConfigError(
                f"env.task is required for env=dmc, e.g. env.task=cartpole_swingup; "
                f"choose one of: {', '.join(tasks)}"
            )
        if env_cfg.task not in tasks:
            raise ConfigError(
                f"env.task={env_cfg.task!r} is not a dm_control task; "
                f"choose one of: {', '.join(tasks)}"
            )
    elif env_cfg.id not in GYM_IDS.values() and env_cfg.id != "Reach":
        known = ", ".join([*GYM_IDS.values(), "Reach"])
        if env_cfg.id not in gym.registry:
            raise ConfigError(f"env.id={env_cfg.id!r} is not a known env; use one of: {known}")
        _check_pixel_control(env_cfg.id, known)


@functools.cache
def _check_pixel_control(env_id: str, known: str) -> None:
    """Another registered gymnasium env must have continuous actions and RGB frames as its
    observation (the recipe resizes and stacks them); one env is made to look."""
    try:
        env = gym.make(env_id)
    except Exception as e:  # a missing dependency, a broken registration
        raise ConfigError(f"env.id={env_id!r} cannot be made: {str(e).splitlines()[0]}") from None
    act, obs = env.action_space, env.observation_space
    env.close()
    if not isinstance(act, gym.spaces.Box):
        raise ConfigError(
            f"env.id={env_id!r} has {type(act).__name__} actions; the control envs need "
            f"continuous (Box) actions: use one of: {known}"
        )
    if not (len(obs.shape or ()) == 3 and obs.shape[2] == 3 and obs.dtype == np.uint8):
        raise ConfigError(
            f"env.id={env_id!r} observes {obs.shape} {obs.dtype}, not RGB frames (H, W, 3) uint8; "
            f"use one of: {known}"
        )


class DMCPixels(gym.Env):
    """A dm_control task as a gymnasium env with pixel observations (size x size x 3 uint8).

    Action repeat happens inside, so only the last physics step of each agent step is rendered.
    Shadows and multisampling are turned off before the first render (5-7x faster on a CPU
    renderer). DMC episodes end only at the time limit: they are truncations, never terminal,
    unless a task says so with a zero discount."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, domain: str, task: str, size: int, camera: int, repeat: int):
        os.environ.setdefault("MUJOCO_GL", "egl")
        from dm_control import suite

        self._env = suite.load(domain, task)
        quality = self._env.physics.model.vis.quality
        quality.shadowsize = 0
        quality.offsamples = 0
        self.size, self.camera, self.repeat = size, camera, repeat
        spec = self._env.action_spec()
        self.action_space = gym.spaces.Box(
            spec.minimum.astype(np.float32), spec.maximum.astype(np.float32), dtype=np.float32
        )
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.render_mode = "rgb_array"

    def _pixels(self, size: int) -> np.ndarray:
        return self._env.physics.render(size, size, camera_id=self.camera)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._env.task.random.seed(seed)
        self._env.reset()
        return self._pixels(self.size), {}

    def step(self, action):
        reward = 0.0
        for _ in range(self.repeat):
            ts = self._env.step(action)
            reward += ts.reward or 0.0
            if ts.last():
                break
        terminated = bool(ts.last() and ts.discount == 0)
        truncated = bool(ts.last() and not terminated)
        return self._pixels(self.size), reward, terminated, truncated, {}

    def render(self) -> np.ndarray:
        return self._pixels(max(VIDEO_SIZE, self.size))

    def close(self):
        self._env.close()


# ------------------------------------------------------------------------------------ the factory


def _gym_make(env_cfg, render_mode: str | None) -> gym.Env:
    try:
        return gym.make(
            env_cfg.id,
            render_mode=render_mode,
            max_episode_steps=int(env_cfg.max_episode_frames),
        )
    except gym.error.DependencyNotInstalled as e:
        extra = "pip install 'pixelrl[box2d]'" if "box2d" in str(e).lower() else str(e)
        raise ConfigError(f"env={env_cfg.name} needs a missing dependency: {extra}") from None


def make_single(env_cfg, render: bool = False) -> gym.Env:
    """One env with the control recipe; `render=True` makes `render()` return RGB video frames."""
    check(env_cfg)
    size, repeat = int(env_cfg.resolution), int(env_cfg.action_repeat)
    if env_cfg.kind == "dmc":
        domain, task = dmc_tasks()[env_cfg.task]
        env: gym.Env = DMCPixels(domain, task, size, int(env_cfg.camera), repeat)
        env = gym.wrappers.TimeLimit(env, -(-int(env_cfg.max_episode_frames) // repeat))
    elif env_cfg.id == "Reach":
        from pixelrl.envs.toy import Reach

        env = Reach(size=size, render_mode="rgb_array" if render else None)
        env = ActionRepeat(gym.wrappers.TimeLimit(env, int(env_cfg.max_episode_frames)), repeat)
    elif env_cfg.id in RENDERED:
        env = _gym_make(env_cfg, "rgb_array")
        env = RenderedPixels(ActionRepeat(env, repeat), size)
    else:
        env = _gym_make(env_cfg, "rgb_array" if render else None)
        env = ResizeFrame(ActionRepeat(env, repeat), size)
    if env_cfg.grayscale:
        env = Grayscale(env)
    env = ChannelsFirst(env)
    if env_cfg.frame_stack > 1:
        env = FrameStack(env, int(env_cfg.frame_stack))
    return env


def video_fps(env_cfg) -> int:
    """Real-time-ish playback: the env's native rate divided by the action repeat."""
    base = BASE_FPS["dmc"] if env_cfg.kind == "dmc" else BASE_FPS.get(env_cfg.id, 30)
    return max(5, round(base / int(env_cfg.action_repeat)))
