"""Replay buffer: n-step targets by hand, stacks rebuilt across episode boundaries, wrap-around,
several envs, the memory check and checkpoints, all against a reference replay of the same steps."""

import io
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from pixelrl.buffers import ReplayBuffer, choose_storage, memory_bytes, n_step_targets
from pixelrl.config import ConfigError
from pixelrl.envs.wrappers import FrameStack

G = 0.5
STORAGES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def test_n_step_targets_by_hand():
    rewards = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    ends = np.array([[0, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1]], bool)
    term = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1]], bool)
    ret, disc, steps = n_step_targets(rewards, ends, term, G)
    # full window: 1 + .5*2 + .25*3, bootstrap g^3; terminal after 2 steps: no bootstrap;
    # time limit after 1 step: bootstrap g^1; terminal on the last step of a full window
    np.testing.assert_allclose(ret, [2.75, 2.0, 1.0, 4.0])
    np.testing.assert_allclose(disc, [0.125, 0.0, 0.5, 0.0])
    np.testing.assert_array_equal(steps, [3, 2, 1, 3])


class Counter(gym.Env):
    """Frames that name their step: pixel 0 = id % 256, pixel 1 = id // 256 (1x2x2 uint8).
    Episode i lasts lengths[i % len] steps and ends terminal when i is even, truncated if odd."""

    def __init__(self, lengths, start=0):
        self.lengths, self.id, self.episode = lengths, start, -1
        self.observation_space = gym.spaces.Box(0, 255, (1, 2, 2), np.uint8)
        self.action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def _frame(self):
        self.id += 1
        f = np.zeros((1, 2, 2), np.uint8)
        f[0, 0, 0], f[0, 0, 1] = self.id % 256, self.id // 256
        return f

    def reset(self, *, seed=None, options=None):
        self.episode += 1
        self.t = 0
        return self._frame(), {}

    def step(self, action):
        self.t += 1
        end = self.t >= self.lengths[self.episode % len(self.lengths)]
        term = end and self.episode % 2 == 0
        return self._frame(), float(self.id % 7), term, end and not term, {}


def play(buffer, lengths_per_env, steps, k=3):
    """Step len(lengths_per_env) stacked Counter envs `steps` times into `buffer`; the action of
    each transition is its global number. Returns the reference list of episodes of
    (obs, action, reward, next_obs, terminated) per env."""
    envs = [
        FrameStack(Counter(lengths, start=1000 * e), k) for e, lengths in enumerate(lengths_per_env)
    ]
    obs = np.stack([env.reset()[0] for env in envs])
    episodes = [[[]] for _ in envs]
    number = 0
    for _ in range(steps):
        actions = np.zeros((len(envs), 1), np.float32)
        rows = []
        for e, env in enumerate(envs):
            actions[e, 0] = number
            number += 1
            rows.append(env.step(actions[e]))
        nxt = np.stack([r[0] for r in rows])
        rew = np.array([r[1] for r in rows], np.float32)
        term = np.array([r[2] for r in rows])
        trunc = np.array([r[3] for r in rows])
        buffer.add(obs, actions, rew, nxt, term, trunc)
        for e, env in enumerate(envs):
            episodes[e][-1].append((obs[e].copy(), actions[e, 0], rew[e], nxt[e].copy(), term[e]))
            if term[e] or trunc[e]:
                episodes[e].append([])
                nxt[e] = env.reset()[0]
        obs = nxt
    return episodes


def expected(episodes, n, gamma):
    """action number -> (obs, n-step return, discount, next_obs), for complete windows only."""
    out = {}
    for per_env in episodes:
        for i, ep in enumerate(per_env):
            ended = i < len(per_env) - 1
            for t in range(len(ep)):
                m = min(n, len(ep) - t)
                if m < n and not ended:
                    continue  # the window runs past the newest step: not sampleable yet
                ret = sum(gamma**j * ep[t + j][2] for j in range(m))
                terminal = ended and t + m == len(ep) and ep[-1][4]
                disc = 0.0 if terminal else gamma**m
                out[ep[t][1]] = (ep[t][0], ret, disc, ep[t + m - 1][3])
    return out


def check_samples(buffer, episodes, n=3, batch=512, gamma=G):
    ref = expected(episodes, n, gamma)
    seen = set()
    for _ in range(4):
        b = buffer.sample(batch, n, gamma)
        assert b["obs"].shape == (batch, 3, 2, 2) and b["obs"].dtype == torch.uint8
        assert b["obs"].device == b["next_obs"].device == buffer.storage
        b = {k: v.cpu().numpy() if isinstance(v, torch.Tensor) else v for k, v in b.items()}
        for i, action in enumerate(b["action"][:, 0]):
            assert action in ref, f"transition {action} should not be sampleable"
            obs, ret, disc, nxt = ref[action]
            np.testing.assert_array_equal(b["obs"][i], obs)
            np.testing.assert_array_equal(b["next_obs"][i], nxt)
            assert b["reward"][i] == pytest.approx(ret, rel=1e-6)
            assert b["discount"][i] == pytest.approx(disc)
            seen.add(action)
    return ref, seen


@pytest.mark.parametrize("storage", STORAGES)
def test_stacks_and_n_step_across_episode_boundaries(storage):
    buffer = ReplayBuffer(1000, (3, 2, 2), 3, 1, storage=storage)
    # episodes of 1, 2, 5 and 4 steps: stacks padded with the first frame, windows cut at ends
    episodes = play(buffer, [[1, 2, 5, 4]], 40)
    ref, seen = check_samples(buffer, episodes)
    assert seen == set(ref)  # every sampleable transition comes up, and nothing else
    assert len(buffer) == 40


@pytest.mark.parametrize(
    "steps", range(40, 47)
)  # the ring's oldest frame at every episode position
def test_wrap_around_only_keeps_intact_transitions(steps):
    buffer = ReplayBuffer(11, (3, 2, 2), 3, 1)
    episodes = play(buffer, [[6, 3]], steps)
    ref, seen = check_samples(buffer, episodes)
    # only the newest 11 frames are kept, and a stack never reaches an overwritten frame
    assert min(seen) >= steps - 11 and max(seen) <= steps - 1
    assert len(buffer) <= 11


@pytest.mark.parametrize("storage", STORAGES)
def test_several_envs_keep_separate_streams(storage):
    buffer = ReplayBuffer(200, (3, 2, 2), 3, 1, num_envs=2, storage=storage)
    episodes = play(buffer, [[3, 7], [5]], 30)
    ref, seen = check_samples(buffer, episodes)
    assert seen == set(ref)


def test_one_frame_stack_and_n_step_one():
    buffer = ReplayBuffer(100, (1, 2, 2), 1, 1)
    episodes = play(buffer, [[4, 2]], 12, k=1)
    ref = expected(episodes, 1, 0.9)
    b = buffer.sample(256, 1, 0.9)
    for i, action in enumerate(b["action"][:, 0]):
        np.testing.assert_array_equal(b["next_obs"][i], ref[action][3])
        assert b["discount"][i] == pytest.approx(ref[action][2])


def test_frames_are_stored_once():
    buffer = ReplayBuffer(1000, (9, 84, 84), 3, 6)
    assert buffer.frames.shape == (1000, 3, 84, 84)
    raw = 1000 * 3 * 84 * 84
    assert buffer.frames.nbytes == raw
    assert raw <= buffer.estimate_bytes < 1.01 * raw
    assert memory_bytes(1000, (3, 84, 84), 6)["frames"] == raw


def test_too_large_a_buffer_is_refused_with_a_clear_error():
    with pytest.raises(ConfigError, match=r"algo.buffer_size=1000000 needs 19\.7. GiB") as e:
        ReplayBuffer(1_000_000, (9, 84, 84), 3, 1, available_bytes=8 * 2**30)
    assert "use algo.buffer_size <= 3" in str(e.value)


def test_sampling_before_any_complete_window_is_an_error():
    buffer = ReplayBuffer(100, (3, 2, 2), 3, 1)
    play(buffer, [[50]], 2)
    with pytest.raises(RuntimeError, match="no complete 3-step transition"):
        buffer.sample(4, 3, G)


@pytest.mark.parametrize(
    "saved_from,loaded_to",
    [("cpu", "cpu")]
    + [pytest.param(a, b, marks=pytest.mark.gpu) for a, b in [("cuda", "cpu"), ("cpu", "cuda")]],
)
def test_checkpoint_round_trip_restores_contents_and_sampling(saved_from, loaded_to):
    buffer = ReplayBuffer(40, (3, 2, 2), 3, 1, num_envs=2, seed=3, storage=saved_from)
    play(buffer, [[3, 7], [5]], 35)
    f = io.BytesIO()
    torch.save(buffer.state_dict(), f)
    f.seek(0)
    state = torch.load(f, weights_only=True)
    other = ReplayBuffer(40, (3, 2, 2), 3, 1, num_envs=2, seed=99, storage=loaded_to)
    other.load_state_dict(state)
    assert len(other) == len(buffer)
    a, b = buffer.sample(64, 3, G), other.sample(64, 3, G)
    for key in a:
        np.testing.assert_array_equal(*(torch.as_tensor(x[key]).cpu() for x in (a, b)))
    with pytest.raises(ConfigError, match="resume with the same algo.buffer_size"):
        ReplayBuffer(60, (3, 2, 2), 3, 1, num_envs=2).load_state_dict(state)


def test_checkpoint_holds_only_the_written_frames():
    buffer = ReplayBuffer(10_000, (3, 8, 8), 3, 1)
    play_frames = np.zeros((1, 3, 8, 8), np.uint8)
    for _ in range(10):
        buffer.add(play_frames, np.zeros((1, 1)), [0.0], play_frames, [False], [False])
    f = io.BytesIO()
    torch.save(buffer.state_dict(), f)
    assert len(f.getvalue()) < 20_000  # 11 frames of 64 bytes, not 10,000


def test_frames_go_on_the_gpu_only_where_asked_and_where_they_fit():
    cpu, gpu, gib = torch.device("cpu"), torch.device("cuda:0"), 2**30
    assert choose_storage("auto", cpu, 2 * gib) == cpu
    assert choose_storage("cpu", gpu, 2 * gib, free_bytes=80 * gib) == cpu
    assert choose_storage("auto", gpu, 2 * gib, free_bytes=80 * gib) == gpu
    assert choose_storage("cuda", gpu, 2 * gib, free_bytes=4 * gib) == gpu
    # more than half the free memory: auto keeps the frames in RAM, cuda says why it can't
    assert choose_storage("auto", gpu, 2 * gib, free_bytes=3 * gib) == cpu
    with pytest.raises(ConfigError, match=r"need 2\.00 GiB but cuda:0 has 3\.00 GiB free"):
        choose_storage("cuda", gpu, 2 * gib, free_bytes=3 * gib)
    with pytest.raises(ConfigError, match="algo.replay_device=cuda needs device=cuda"):
        choose_storage("cuda", cpu, 2 * gib)


@pytest.mark.gpu
def test_frames_on_the_gpu_are_not_counted_against_ram():
    # 1,000 frames of 3x84x84 are 21 MB; 1 MB of "available RAM" only has to hold the rest
    buffer = ReplayBuffer(1000, (9, 84, 84), 3, 1, available_bytes=2**20, storage="cuda")
    assert buffer.frames.device.type == "cuda" and "on cuda" in buffer.describe()
    for where in ({}, {"storage": "cuda", "checkpointed": True}):  # a checkpoint copies to RAM
        with pytest.raises(ConfigError, match="needs 0.02 GiB of RAM for the replay buffer"):
            ReplayBuffer(1000, (9, 84, 84), 3, 1, available_bytes=2**20, **where)


def test_the_ram_check_respects_a_cgroup_limit(monkeypatch):
    """A container's or SLURM job's memory limit is what the buffer may use, not the machine's."""
    from pixelrl import device

    monkeypatch.setattr(device, "_cgroup_memory_left", lambda: 300 << 20)
    assert device.available_memory_bytes() == 300 << 20
    with pytest.raises(ConfigError, match="only 0.29 GiB is available"):
        ReplayBuffer(100_000, (9, 84, 84), 3, 1)
    ReplayBuffer(10_000, (9, 84, 84), 3, 1)  # 0.2 GiB fits


_RESUME_RSS = """
import resource, sys
import numpy as np, psutil
from pixelrl import checkpoint
from pixelrl.buffers import ReplayBuffer
path, capacity = sys.argv[1], int(sys.argv[2])
shape = (9, 64, 64)
if sys.argv[3] == "save":
    b = ReplayBuffer(capacity, shape, 3, 1)
    pool = np.random.default_rng(0).integers(0, 256, (8, 1, *shape), dtype=np.uint8)
    for t in range(capacity - 10):
        b.add(pool[t % 8], np.zeros((1, 1), np.float32), [0.0], pool[(t + 1) % 8], [False], [t % 100 == 99])
    config = {"algo": {"name": "ddpg"}, "env": {"name": "dmc"}}
    checkpoint.save(path, {"config": config, "frames": 1, "models": {}, "replay": b.state_dict()})
else:
    base = psutil.Process().memory_info().rss
    b = ReplayBuffer(capacity, shape, 3, 1)
    payload = checkpoint.load(path)
    b.load_state_dict(payload.pop("replay"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print((peak - base) / (capacity * 3 * 64 * 64))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB, madvise")
def test_resuming_a_saved_replay_buffer_does_not_hold_it_twice(tmp_path):
    """checkpoint.include_replay: the checkpoint is read memory-mapped and its pages are let go
    chunk by chunk as the frames are copied in, so peak memory stays near one buffer (loading
    it whole first would need two)."""
    path, capacity = str(tmp_path / "last.pt"), 20_000  # 0.23 GiB of frames
    run = [sys.executable, "-c", _RESUME_RSS, path, str(capacity)]
    subprocess.run([*run, "save"], check=True, timeout=300)
    peak = float(
        subprocess.run(
            [*run, "load"], check=True, timeout=300, capture_output=True, text=True
        ).stdout
    )
    assert 0.9 < peak < 1.4, f"peak RSS {peak:.2f} x the frames while resuming"
