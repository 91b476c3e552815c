"""Replay buffer for off-policy learning from pixels: every frame is stored once, as uint8.

An env hands out stacks of the last k frames, so storing (obs, next_obs) pairs would keep each
frame 2k times. Here each env's stream of frames goes into its own ring of slots, one frame per
slot, and stacks are rebuilt at sample time (DrQ-v2 and the DQN replay memory do the same):

    slot:      s0      s1      s2      s3(last)  s4      s5 ...
    frame:     o0      o1      o2      o3        o'0     o'1      (the newest frame of each obs)
    action:    a0      a1      a2      -         a'0     ...
    reward:    r0      r1      r2      -         r'0
    pos:       0       1       2       3         0       1        (index within the episode)

The stack of slot t is frames t-k+1 .. t, where frames before the episode's first slot repeat
that first frame (as FrameStack pads at reset): source = t - min(d, pos[t]). An episode that ends
stores its final observation in one extra slot without an action, so `capacity` counts frames
(transitions plus one per episode). A sampled slot t gives the n-step transition
    (stack(t), a_t, sum_{j<m} g^j r_{t+j}, g^m (1 - terminal), stack(t+m)),
with m = n, or fewer steps when the episode ends first; windows not yet complete, or reaching
frames already overwritten by the ring, are never sampled.

The frames live in a torch tensor, in RAM or on the GPU (`storage`): stacks are gathered with one
index_select on that device, so a GPU learner's batch never crosses PCIe (100k frames of 3x84x84
are 2 GiB, a small share of a training GPU). The per-slot bookkeeping stays in numpy.
"""

from __future__ import annotations

import ctypes
import mmap
import sys

import numpy as np
import torch

from pixelrl.device import available_memory_bytes
from pixelrl.errors import ConfigError

RAM_FRACTION = 0.9  # refuse a buffer that needs more than this share of the available RAM
GPU_FRACTION = 0.5  # frames go on the GPU only within this share of its free memory
MAX_SAMPLE_TRIES = 1000
_SAVED = ("frames", "actions", "rewards", "pos", "has_action", "ends", "terminated")
CHUNK_BYTES = 64 << 20
_MADV_DONTNEED = 4  # linux/mman.h


def _file_backed(address: int) -> bool:
    """Whether `address` lies in a mapping of a file (/proc/self/maps), not anonymous memory."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split(maxsplit=5)
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                if lo <= address < hi:
                    return len(fields) == 6 and fields[5].startswith("/")
    except OSError:
        pass
    return False


def release_pages(tensor: torch.Tensor) -> None:
    """Let the kernel drop the pages under `tensor` when it is a view of a memory-mapped file (a
    checkpoint loaded with mmap): the process's memory shrinks, the file keeps the data. Anything
    else (anonymous memory, where this would zero the data) is left alone. Linux only."""
    if tensor.device.type != "cpu" or not sys.platform.startswith("linux") or not len(tensor):
        return
    if not _file_backed(tensor.data_ptr()):
        return
    page = mmap.PAGESIZE
    start = -(-tensor.data_ptr() // page) * page  # whole pages inside the tensor only
    end = (tensor.data_ptr() + tensor.numel() * tensor.element_size()) // page * page
    if end > start:
        madvise = ctypes.CDLL(None).madvise
        madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED)


def n_step_targets(
    rewards: np.ndarray, ends: np.ndarray, terminated: np.ndarray, gamma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n-step return, bootstrap discount and step count for (B, n) windows starting at step t.

    `ends[:, j]` says the episode ended after step t+j (terminal or time limit), `terminated[:, j]`
    that it ended in a terminal state. Steps after the first end do not count. Returns
    (sum_{j<m} g^j r_j, g^m * (1 - terminal at step m-1), m)."""
    n = rewards.shape[1]
    ended_before = np.zeros_like(ends, dtype=bool)
    ended_before[:, 1:] = np.cumsum(ends[:, :-1], axis=1) > 0
    alive = ~ended_before
    powers = gamma ** np.arange(n, dtype=np.float64)
    returns = (rewards * alive * powers).sum(axis=1)
    steps = alive.sum(axis=1)
    last = steps - 1
    rows = np.arange(rewards.shape[0])
    discount = gamma ** steps.astype(np.float64) * (1.0 - terminated[rows, last])
    return returns.astype(np.float32), discount.astype(np.float32), steps


def memory_bytes(capacity: int, frame_shape: tuple[int, ...], action_dim: int) -> dict[str, int]:
    """The buffer's memory: frames (uint8) and the per-slot rest (action, reward, pos, flags)."""
    frames = int(capacity) * int(np.prod(frame_shape))
    per_slot = 4 * action_dim + 4 + 4 + 3  # float32 action and reward, int32 pos, 3 bool flags
    return {"frames": frames, "other": int(capacity) * per_slot}


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def gpu_free_bytes(device: torch.device) -> int:
    return int(torch.cuda.mem_get_info(device)[0])


def choose_storage(
    setting: str, device: torch.device, frame_bytes: int, free_bytes: int | None = None
) -> torch.device:
    """Where the replay frames live (algo.replay_device): `cpu` in RAM; `cuda` on the training
    GPU, an error if it is not one or the frames would take more than GPU_FRACTION of its free
    memory; `auto` on the training GPU when they fit so, else in RAM."""
    cpu = torch.device("cpu")
    if setting == "cpu" or (setting == "auto" and device.type != "cuda"):
        return cpu
    if device.type != "cuda":
        raise ConfigError(f"algo.replay_device={setting} needs device=cuda (this run: {device})")
    free = gpu_free_bytes(device) if free_bytes is None else free_bytes
    if frame_bytes <= GPU_FRACTION * free:
        return device
    if setting == "auto":
        return cpu
    raise ConfigError(
        f"algo.replay_device=cuda: the replay frames need {_gib(frame_bytes)} but {device} has "
        f"{_gib(free)} free (at most {GPU_FRACTION:.0%} of it is used); use "
        "algo.replay_device=auto or cpu, or a smaller algo.buffer_size"
    )


class ReplayBuffer:
    """Frame-once replay for `num_envs` parallel streams (each gets capacity // num_envs slots).

    add(obs, action, reward, next_obs, terminated, truncated) takes one vector step (arrays with a
    leading env axis; next_obs holds the final observation of the envs that ended);
    sample(batch, n_step, gamma) returns obs and next_obs as uint8 tensors on `storage`, and numpy
    arrays action, reward (n-step), discount."""

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        frame_stack: int,
        action_dim: int,
        num_envs: int = 1,
        seed: int = 0,
        available_bytes: int | None = None,
        storage: torch.device | str = "cpu",
        checkpointed: bool = False,
    ):
        if obs_shape[0] % frame_stack:
            raise ValueError(f"obs channels {obs_shape[0]} are not a multiple of {frame_stack}")
        self.k = frame_stack
        self.channels = obs_shape[0] // frame_stack
        self.frame_shape = (self.channels, *obs_shape[1:])
        self.num_envs = num_envs
        self.per_env = int(capacity) // num_envs
        if self.per_env < 2:
            raise ConfigError(
                f"algo.buffer_size={capacity} is too small for {num_envs} envs; "
                "it must be >= 2 frames per env"
            )
        size = self.per_env * num_envs
        need = memory_bytes(size, self.frame_shape, action_dim)
        self.estimate_bytes = need["frames"] + need["other"]
        self.storage = torch.device(storage)
        if self.storage.type == "cuda" and self.storage.index is None:
            self.storage = torch.device("cuda", torch.cuda.current_device())  # as tensors report it
        on_gpu = self.storage.type != "cpu"
        # Frames on the GPU were checked by choose_storage; a checkpoint of the buffer
        # (checkpoint.include_replay) copies them into RAM, so then they count here too.
        in_ram = need["other"] if on_gpu and not checkpointed else self.estimate_bytes
        available = available_memory_bytes() if available_bytes is None else available_bytes
        if in_ram > RAM_FRACTION * available:
            fits = int(RAM_FRACTION * available / (in_ram / size))
            shape = "x".join(map(str, self.frame_shape))
            raise ConfigError(
                f"algo.buffer_size={capacity} needs {_gib(in_ram)} of RAM for the "
                f"replay buffer ({shape} uint8 frames) but only {_gib(available)} is available; "
                f"use algo.buffer_size <= {fits:,} or a smaller env.resolution"
            )
        if on_gpu:
            self.frames = torch.zeros((size, *self.frame_shape), dtype=torch.uint8, device=storage)
        else:  # np.zeros maps untouched pages lazily: the RSS grows as the buffer fills
            self.frames = torch.from_numpy(np.zeros((size, *self.frame_shape), np.uint8))
        self.actions = np.zeros((size, action_dim), np.float32)
        self.rewards = np.zeros(size, np.float32)
        self.pos = np.zeros(size, np.int32)
        self.has_action = np.zeros(size, bool)
        self.ends = np.zeros(size, bool)
        self.terminated = np.zeros(size, bool)
        self.count = np.zeros(num_envs, np.int64)  # slots ever written, per stream
        self.cursor = np.full(
            num_envs, -1, np.int64
        )  # slot id of the current obs (-1: new episode)
        self.transitions = 0
        self.rng = np.random.default_rng(seed)

    def describe(self) -> str:
        shape = "x".join(map(str, self.frame_shape))
        if self.storage.type == "cpu":
            where = f"in RAM ({_gib(available_memory_bytes())} available)"
        else:
            where = f"on {self.storage} ({_gib(gpu_free_bytes(self.storage))} free after it)"
        return (
            f"replay buffer: {len(self.frames):,} frames of {shape} uint8, each stored once "
            f"(stacks of {self.k} rebuilt when sampled): {_gib(self.estimate_bytes)} at full "
            f"capacity, {where}"
        )

    def __len__(self) -> int:
        return self.transitions

    # ------------------------------------------------------------------ writing
    def _index(self, env: int | np.ndarray, slot_id):
        return env * self.per_env + slot_id % self.per_env

    def _new_slot(self, env: int, frame: np.ndarray, pos: int) -> int:
        slot_id = int(self.count[env])
        i = self._index(env, slot_id)
        if self.has_action[i]:
            self.transitions -= 1
        self.frames[i] = torch.from_numpy(np.ascontiguousarray(frame))
        self.pos[i] = pos
        self.has_action[i] = self.ends[i] = self.terminated[i] = False
        self.count[env] += 1
        return slot_id

    def add(self, obs, action, reward, next_obs, terminated, truncated) -> None:
        c = self.channels
        for e in range(self.num_envs):
            if self.cursor[e] < 0:
                self.cursor[e] = self._new_slot(e, obs[e, -c:], 0)
            cur = int(self.cursor[e])
            i = self._index(e, cur)
            done = bool(terminated[e] or truncated[e])
            self.actions[i] = action[e]
            self.rewards[i] = reward[e]
            self.ends[i] = done
            self.terminated[i] = bool(terminated[e])
            self.has_action[i] = True
            self.transitions += 1
            nxt = self._new_slot(e, next_obs[e, -c:], int(self.pos[i]) + 1)
            self.cursor[e] = -1 if done else nxt

    def new_episodes(self) -> None:
        """The envs were reset outside add() (a resumed run): the next add starts new episodes."""
        self.cursor[:] = -1

    # ------------------------------------------------------------------ sampling
    def _valid(self, env: np.ndarray, slot_id: np.ndarray, n_step: int) -> np.ndarray:
        count = self.count[env]
        oldest = np.maximum(count - self.per_env, 0)
        i = self._index(env, slot_id)
        ok = self.has_action[i] & (slot_id - np.minimum(self.k - 1, self.pos[i]) >= oldest)
        # An open window needs an action at every step. The newest slot of a stream never has
        # one (the current obs, or an episode's final obs), so no window reaches unwritten slots.
        open_ = ~self.ends[i]
        for j in range(1, n_step):
            ij = self._index(env, slot_id + j)
            ok &= ~open_ | self.has_action[ij]
            open_ &= ~self.ends[ij]
        return ok

    def _stack(self, env: np.ndarray, slot_id: np.ndarray) -> torch.Tensor:
        pos = self.pos[self._index(env, slot_id)][:, None]
        back = np.arange(self.k - 1, -1, -1)  # oldest frame first, as FrameStack orders them
        rows = self._index(env[:, None], slot_id[:, None] - np.minimum(back, pos))
        rows = torch.from_numpy(rows.reshape(-1)).to(self.storage, non_blocking=True)
        stacks = self.frames.index_select(0, rows)
        return stacks.view(len(slot_id), self.k * self.channels, *self.frame_shape[1:])

    def sample(self, batch_size: int, n_step: int, gamma: float) -> dict[str, np.ndarray]:
        env = np.empty(batch_size, np.int64)
        slot_id = np.empty(batch_size, np.int64)
        missing = np.arange(batch_size)
        for _ in range(MAX_SAMPLE_TRIES):
            e = self.rng.integers(self.num_envs, size=len(missing))
            count = self.count[e]
            low = np.maximum(count - self.per_env, 0)
            s = low + (self.rng.random(len(missing)) * np.maximum(count - low, 1)).astype(np.int64)
            ok = self._valid(e, s, n_step)
            env[missing[ok]], slot_id[missing[ok]] = e[ok], s[ok]
            missing = missing[~ok]
            if not len(missing):
                break
        else:
            raise RuntimeError(
                f"replay buffer: no complete {n_step}-step transition to sample from yet "
                f"({self.transitions} stored); collect more before updating"
            )
        steps = slot_id[:, None] + np.arange(n_step)
        idx = self._index(env[:, None], steps)
        returns, discount, m = n_step_targets(
            self.rewards[idx], self.ends[idx], self.terminated[idx], gamma
        )
        return {
            "obs": self._stack(env, slot_id),
            "action": self.actions[self._index(env, slot_id)],
            "reward": returns,
            "discount": discount,
            "next_obs": self._stack(env, slot_id + m),
        }

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """The slots written so far, as tensors: shared with the buffer in RAM (no copy), copied
        from the GPU when the frames live there."""
        streams = []
        for e in range(self.num_envs):
            used = int(min(self.count[e], self.per_env))
            lo = e * self.per_env
            part = slice(lo, lo + used)
            streams.append({name: self._saved(name, part) for name in _SAVED})
        return {
            "streams": streams,
            "count": torch.from_numpy(self.count.copy()),
            "frame_shape": list(self.frame_shape),
            "per_env": self.per_env,
            "rng": self.rng.bit_generator.state,
        }

    def _saved(self, name: str, part: slice) -> torch.Tensor:
        array = getattr(self, name)
        if isinstance(array, torch.Tensor):
            if array.device.type != "cpu":
                return array[part].cpu()
            array = array.numpy()
        # from a numpy slice, the tensor's storage is the slice alone: torch.save writes only it
        return torch.from_numpy(array[part])

    def _load_frames(self, part: slice, frames: torch.Tensor) -> None:
        """Copy saved frames in, a chunk at a time. A checkpoint is loaded memory-mapped: each
        copied chunk's pages of the file are let go at once, so the resumed buffer is never
        held twice (the file's pages and the buffer's) on the way in."""
        step = max(1, CHUNK_BYTES // max(1, frames[0].numel()))
        for i in range(0, len(frames), step):
            chunk = frames[i : i + step]
            self.frames[part.start + i : part.start + i + len(chunk)].copy_(chunk)
            release_pages(chunk)

    def load_state_dict(self, state: dict) -> None:
        if list(state["frame_shape"]) != list(self.frame_shape) or len(state["streams"]) != len(
            self.count
        ):
            raise ConfigError(
                f"the checkpoint's replay buffer holds {state['frame_shape']} frames of "
                f"{len(state['streams'])} envs; this run needs {list(self.frame_shape)} x "
                f"{self.num_envs}"
            )
        if int(state["per_env"]) != self.per_env:
            raise ConfigError(
                f"the checkpoint's replay buffer has {state['per_env'] * self.num_envs:,} slots; "
                f"resume with the same algo.buffer_size"
            )
        for e, stream in enumerate(state["streams"]):
            lo = e * self.per_env
            for name, tensor in stream.items():
                part = slice(lo, lo + len(tensor))
                if name == "frames":
                    self._load_frames(part, tensor)
                else:
                    getattr(self, name)[part] = tensor.numpy()
        self.count[:] = state["count"].numpy()
        self.transitions = int(self.has_action.sum())
        self.rng.bit_generator.state = state["rng"]
        self.new_episodes()
