"""REINFORCE: Psi choices by hand, Karpathy preprocessing on crafted frames, learning, the preset."""

import gymnasium as gym
import numpy as np
import pytest
from omegaconf import OmegaConf

from pixelrl import compose_config
from pixelrl.algos.reinforce import batch_targets
from pixelrl.config import ReinforceConfig
from pixelrl.envs.atari import KarpathyDiff

from .conftest import FAST, metrics

G = 0.9


def algo(**kw):
    return OmegaConf.structured(ReinforceConfig(gamma=G, **kw))


# ---------------------------------------------------------------- Psi by hand (the returns
# themselves: tests/test_returns.py)

R1 = np.array([0.0, 1.0, 0.0, -1.0])
R2 = np.array([0.0, 0.0, 1.0])


def test_running_mean_baseline_is_subtracted():
    returns, psi = batch_targets(
        [{"rewards": R2}], algo(psi="baseline", baseline="running_mean"), 0.5
    )
    assert np.allclose(returns[0], [G * G, G, 1.0])
    assert np.allclose(psi[0], [G * G - 0.5, G - 0.5, 0.5])
    # before any batch there is no running mean yet: nothing is subtracted
    _, psi0 = batch_targets([{"rewards": R2}], algo(psi="baseline", baseline="running_mean"), None)
    assert np.allclose(psi0[0], returns[0])


# ---------------------------------------------------------------- Karpathy preprocessing


class FrameEnv(gym.Env):
    """Serves pre-made RGB frames: reset gives frames[0], each step the next one."""

    def __init__(self, frames):
        self.frames = frames
        self.observation_space = gym.spaces.Box(0, 255, (210, 160, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(6)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return self.frames[0], {}

    def step(self, action):
        self.t += 1
        return self.frames[self.t], 0.0, self.t == len(self.frames) - 1, False, {}


def pong_frame(dots=(), background=144, extra=()):
    """A Pong-like frame: background red 144 (and 109 in a band), white dots at (row, col)."""
    f = np.zeros((210, 160, 3), np.uint8)
    f[..., 0] = background
    f[100:110, :, 0] = 109  # the second background colour pg-pong erases
    for r, c in dots:
        f[r, c] = 236
    for r, c, v in extra:
        f[r, c, 0] = v
    return f


def test_karpathy_preprocess_known_pixels():
    # (35, 0) is the crop's first row and column; (37, 4) -> output row 1, col 2;
    # (36, 4) is an odd row: dropped by the 2x downsample; (20, 10) is above the crop
    x = KarpathyDiff.preprocess(
        pong_frame(dots=[(35, 0), (37, 4), (36, 4), (20, 10)], extra=[(195, 0, 50)])
    )
    assert x.shape == (6400,) and x.dtype == np.float32
    img = x.reshape(80, 80)
    expected = np.zeros((80, 80), np.float32)
    expected[0, 0] = 1
    expected[1, 2] = 1
    np.testing.assert_array_equal(img, expected)  # both backgrounds erased, row 195 cropped away


def test_karpathy_difference_frames_and_reset():
    frames = [pong_frame(dots=[(41, 10)]), pong_frame(dots=[(43, 12)]), pong_frame(dots=[(43, 12)])]
    env = KarpathyDiff(FrameEnv(frames))
    x0, _ = env.reset()
    np.testing.assert_array_equal(x0, np.zeros(6400))  # zeros on an episode's first frame
    x1, *_ = env.step(0)
    img = x1.reshape(80, 80)
    assert img[3, 5] == -1 and img[4, 6] == 1 and np.count_nonzero(img) == 2  # the ball moved
    x2, *_ = env.step(0)
    np.testing.assert_array_equal(x2, np.zeros(6400))  # nothing moved
    x0b, _ = env.reset()
    np.testing.assert_array_equal(x0b, np.zeros(6400))  # a new episode starts from zeros again


# ---------------------------------------------------------------- configs and runs


def test_karpathy_preset_composes_exactly():
    cfg = compose_config(["experiment=karpathy_pong"])
    assert cfg.algo.name == "reinforce" and cfg.env.game == "pong"
    assert cfg.env.preprocess == "karpathy" and list(cfg.env.action_set) == [2, 3]
    assert list(cfg.env.frame_skip_range) == [2, 4] and cfg.env.sticky_actions == 0.25
    assert (cfg.model.trunk, cfg.model.hidden, cfg.model.bias, cfg.model.init) == (
        "mlp",
        200,
        False,
        "karpathy",
    )
    assert cfg.model.policy_head == "sigmoid"
    a = cfg.algo
    assert (a.batch_episodes, a.gamma, a.lr, a.rmsprop_alpha, a.eps) == (10, 0.99, 1e-4, 0.99, 1e-5)
    assert a.reset_on_reward and a.normalize_returns == "episode" and a.psi == "reward_to_go"


def test_karpathy_preset_runs_end_to_end(cli, tmp_path):
    cli(
        "experiment=karpathy_pong",
        "algo.batch_episodes=2",
        "algo.num_envs=2",
        "total_frames=2000",
        "eval.every_frames=0",
        "eval.episodes=1",
        "eval.num_envs=1",
        "video.enabled=true",
        "video.max_steps=20",
        "logger.wandb.mode=disabled",
        "logger.progress=false",
        "hydra.run.dir=run",
        check=True,
    )
    rows = metrics(tmp_path / "run")
    eps = [r for r in rows if "train/episode_return" in r]
    assert len(eps) == 2 and all("train/running_reward" in r for r in eps)
    assert eps[1]["train/running_reward"] == pytest.approx(
        0.99 * eps[0]["train/episode_return"] + 0.01 * eps[1]["train/episode_return"]
    )
    assert any("losses/policy_loss" in r for r in rows)
    assert list((tmp_path / "run" / "videos").glob("*.mp4"))


BAD = [
    (["algo=reinforce", "algo.batch_episodes=0"], "algo.batch_episodes=0 is out of range"),
    (["algo=reinforce", "algo.gamma=-0.1"], "algo.gamma=-0.1 is out of range"),
    (
        ["algo=reinforce", "algo.psi=gae"],
        "algo.psi='gae' is not allowed; choose one of: total, reward_to_go, baseline",
    ),
    (["experiment=karpathy_pong", "env=Breakout"], "env.preprocess=karpathy needs env.game=pong"),
    (
        ["algo=reinforce", "env=atari", "env.game=breakout", "env.preprocess=karpathy"],
        "needs env.game=pong",
    ),
]


@pytest.mark.parametrize("args,expected", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_reinforce_input(main, args, expected):
    code, _, err = main(*args, *FAST)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], err


@pytest.mark.parametrize("mode", ["episode", "none"])
def test_streamed_per_episode_gradients_equal_the_batch_gradient(mode):
    """pg-pong's grad_buffer: summing each finished episode's gradient == one batch gradient."""
    import torch

    from pixelrl.algos.reinforce import accumulate_gradients, make_policy
    from pixelrl.episodes import GradientStream

    cfg = compose_config(["experiment=karpathy_pong", f"algo.normalize_returns={mode}"])
    space = gym.spaces.Box(-1.0, 1.0, (6400,), np.float32)
    torch.manual_seed(0)
    net = make_policy(cfg, space, gym.spaces.Discrete(2))
    rng = np.random.default_rng(0)
    episodes = []
    for length in (30, 55, 41):
        rewards = np.zeros(length)
        rewards[rng.choice(length, 4, replace=False)] = rng.choice([-1.0, 1.0], 4)
        obs = rng.integers(-1, 2, size=(length, 6400)).astype(np.float16)
        episodes.append({"obs": obs, "actions": rng.integers(0, 2, length), "rewards": rewards})
    accumulate_gradients(net, episodes, cfg.algo, None, torch.device("cpu"))
    batch = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    stream = GradientStream(
        lambda eps, mean: accumulate_gradients(net, eps, cfg.algo, mean, torch.device("cpu"))
    )
    for ep in episodes:
        stream.jobs.put(ep)
    totals = stream.drain()
    stream.close()
    assert totals["batch_steps"] == 30 + 55 + 41
    for g_batch, p in zip(batch, net.parameters()):
        torch.testing.assert_close(p.grad, g_batch, rtol=1e-4, atol=1e-6)
