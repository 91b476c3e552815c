"""Pixel continuous-control envs: shapes, action repeat, time limits, rendering, bad configs."""

import importlib.util
import sys

import gymnasium as gym
import numpy as np
import pytest
from omegaconf import OmegaConf

from pixelrl.config import ConfigError, ControlEnvConfig
from pixelrl.envs import EVAL, make_vector_env
from pixelrl.envs.control import ActionRepeat, check, make_single, video_fps

HAS_DMC = importlib.util.find_spec("dm_control") is not None
needs_dmc = pytest.mark.skipif(not HAS_DMC, reason="needs the dmc extra")


def env_cfg(name, **kw):
    base = {
        "Pendulum": {"id": "Pendulum-v1", "max_episode_frames": 200},
        "CarRacing": {"id": "CarRacing-v3"},
        "Reach": {"id": "Reach", "resolution": 32, "action_repeat": 1, "frame_stack": 1},
        "dmc": {"id": "dmc", "kind": "dmc", "task": "cartpole_swingup"},
    }[name]
    return OmegaConf.structured(ControlEnvConfig(name=name, **{**base, **kw}))


class Steps(gym.Env):
    """Reward = step number; terminates after `length` steps."""

    observation_space = gym.spaces.Box(0, 255, (2, 2, 3), np.uint8)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self, length):
        self.length = length

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros((2, 2, 3), np.uint8), {}

    def step(self, action):
        self.t += 1
        return np.zeros((2, 2, 3), np.uint8), float(self.t), self.t >= self.length, False, {}


def test_action_repeat_sums_rewards_and_stops_at_the_end():
    env = ActionRepeat(Steps(5), 2)
    env.reset()
    assert env.step([0])[1:3] == (1 + 2, False)
    assert env.step([0])[1:3] == (3 + 4, False)
    assert env.step([0])[1:3] == (5, True)  # ended after one of its two repeats


def test_pendulum_pixels_repeat_and_time_limit():
    env = make_single(env_cfg("Pendulum"))
    obs, info = env.reset(seed=3)
    assert obs.shape == (9, 84, 84) and obs.dtype == np.uint8 and info == {}
    assert np.array_equal(obs[:3], obs[6:])  # stack padded with the first rendering
    assert obs.min() < obs.max()  # a picture, not a blank
    assert env.action_space.shape == (1,) and env.action_space.high[0] == 2.0
    raw = gym.make("Pendulum-v1")
    raw.reset(seed=3)
    steps, total, raw_total = 0, 0.0, 0.0
    done = False
    while not done:
        obs, r, term, trunc, _ = env.step(np.array([1.0], np.float32))
        raw_total += raw.step(np.array([1.0], np.float32))[1] + raw.step([1.0])[1]
        total += r
        steps += 1
        done = term or trunc
    assert steps == 100 and trunc and not term  # 200 frames at action repeat 2
    assert total == pytest.approx(raw_total)  # the same physics, rewards summed over repeats
    assert not np.array_equal(obs[:3], obs[6:])  # it moved


def test_pendulum_video_frames_are_rgb():
    env = make_single(env_cfg("Pendulum"), render=True)
    env.reset(seed=0)
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8


def test_carracing_resolution_and_actions():
    env = make_single(env_cfg("CarRacing", resolution=64))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (9, 64, 64) and obs.dtype == np.uint8
    assert env.action_space.shape == (3,)
    np.testing.assert_array_equal(env.action_space.low, [-1, 0, 0])
    obs, r, *_ = env.step(np.array([0.0, 1.0, 0.0], np.float32))
    assert obs.shape == (9, 64, 64) and np.isfinite(r)


def test_reach_and_grayscale():
    env = make_single(env_cfg("Reach"))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 32, 32)
    gray = make_single(env_cfg("Reach", grayscale=True, frame_stack=3))
    obs, _ = gray.reset(seed=0)
    assert obs.shape == (3, 32, 32) and np.array_equal(obs[0], obs[2])


def test_vector_env_gives_stacks_and_episode_returns():
    env = make_vector_env(env_cfg("Reach"), 2, mode=EVAL)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 3, 32, 32) and env.frames_per_step == 1
    ends = 0
    for _ in range(50):
        obs, r, term, trunc, info = env.step(np.zeros((2, 2), np.float32))
        ends += int(info.get("_episode", np.zeros(2)).sum())
    assert ends == 2 and info["episode"]["l"].tolist() == [50, 50]
    env.close()


def test_video_fps_follows_action_repeat():
    assert video_fps(env_cfg("Pendulum")) == 15
    assert video_fps(env_cfg("dmc", action_repeat=8)) == 6


@needs_dmc
def test_dmc_cartpole_pixels_action_repeat_and_rendering():
    env = make_single(env_cfg("dmc", action_repeat=8), render=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (9, 84, 84) and obs.dtype == np.uint8 and obs.max() > 0
    quality = env.unwrapped._env.physics.model.vis.quality
    assert quality.shadowsize == 0 and quality.offsamples == 0  # fast CPU rendering
    assert env.render().shape == (256, 256, 3)
    steps, done = 0, False
    while not done:
        obs, r, term, trunc, info = env.step(np.zeros(1, np.float32))
        assert 0.0 <= r <= 8.0 and info == {}
        steps += 1
        done = term or trunc
    assert steps == 125 and trunc and not term  # 1000 physics steps / 8, a time limit


@needs_dmc
def test_dmc_same_seed_same_pixels():
    a, b = make_single(env_cfg("dmc")), make_single(env_cfg("dmc"))
    np.testing.assert_array_equal(a.reset(seed=5)[0], b.reset(seed=5)[0])
    assert not np.array_equal(a.reset(seed=5)[0], b.reset(seed=6)[0])


@needs_dmc
def test_bad_dmc_task_lists_the_valid_ones():
    with pytest.raises(
        ConfigError, match="env.task='cartpole_swingupp' is not a dm_control task"
    ) as e:
        check(env_cfg("dmc", task="cartpole_swingupp"))
    assert "cartpole_swingup, " in str(e.value) and "walker_walk" in str(e.value)
    with pytest.raises(ConfigError, match="env.task is required for env=dmc"):
        check(env_cfg("dmc", task=None))


def test_dmc_without_the_extra_says_which_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "dm_control", None)  # import dm_control -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'pixelrl\[dmc\]'"):
        make_single(env_cfg("dmc"))


def test_carracing_without_box2d_says_which_pip_install(monkeypatch):
    def missing(*args, **kwargs):
        raise gym.error.DependencyNotInstalled(
            'Box2D is not installed, run `pip install "gymnasium[box2d]"`'
        )

    monkeypatch.setattr(gym, "make", missing)
    with pytest.raises(
        ConfigError,
        match=r"env=CarRacing needs a missing dependency: pip install 'pixelrl\[box2d\]'",
    ):
        make_single(env_cfg("CarRacing"))
