"""Atari (ALE) environments: two preprocessing recipes and two vector backends.

Standard recipe (DQN/A3C), in this order, one small wrapper each:
    AtariEnv(frameskip=1)            the emulator, sticky actions as configured
 -> NoopReset(noop_max)              1..noop_max no-ops after reset (from the env's own RNG)
 -> SkipMaxGray(frame_skip)          repeat the action, max over the last two grayscale screens
 -> FireReset                        press FIRE after reset in games that need it
 -> ResizeFrame(84)                  cv2.INTER_AREA
 -> ChannelsFirst, FrameStack(4)     -> uint8 (4, 84, 84)
 then, at the vector level (EpisodeSignals): episodic life and reward clipping, training only.

Grayscale is ALE's palette luminance (`getScreenGrayscale`), as gymnasium's AtariPreprocessing
reads it, so the recipe matches AtariPreprocessing + FrameStackObservation frame for frame.

Karpathy recipe (Pong from Pixels): AtariEnv(rgb, random frame skip) -> KarpathyDiff -> 6400 floats.

Backends: gymnasium Sync/AsyncVectorEnv over the recipe above, `procs` (several envs per worker
process), or `ale_vector`: ale-py's C++ thread-pool AtariVectorEnv with the same standard recipe.
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
from omegaconf import DictConfig

from pixelrl.envs.wrappers import (
    ActionSubset,
    ChannelsFirst,
    FrameStack,
    ResizeFrame,
)
from pixelrl.errors import ConfigError

ALE_FPS = 60


def _quiet_ale() -> None:
    """ALE prints a banner to stderr in every process that loads a ROM; keep only errors."""
    import ale_py

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)


@functools.lru_cache(maxsize=1)
def available_games() -> list[str]:
    from ale_py import roms

    return sorted(roms.get_all_rom_ids())


def check(env_cfg: DictConfig) -> None:
    """Raise ConfigError for an Atari config that cannot be built (unknown ROM, a recipe the
    backend cannot run)."""
    games = available_games()
    if not env_cfg.game:
        raise ConfigError(
            f"env.game is required for env={env_cfg.name}; e.g. env.game=space_invaders "
            f"(ALE ROM ids: {len(games)} games, {', '.join(games[:6])}, ...)"
        )
    if env_cfg.game not in games:
        close = [g for g in games if env_cfg.game.lower().replace("-", "_") in g]
        hint = (
            f"; did you mean: {', '.join(close[:5])}"
            if close
            else f"; valid ids include: {', '.join(games[:8])}, ..."
        )
        raise ConfigError(f"env.game={env_cfg.game!r} is not an ALE ROM id (snake_case){hint}")
    if env_cfg.preprocess == "karpathy" and env_cfg.game != "pong":
        raise ConfigError(
            "env.preprocess=karpathy needs env.game=pong (the crop rows 35:195 and the background "
            f"colours 144/109 are Pong's), got env.game={env_cfg.game!r}"
        )
    if env_cfg.frame_skip_range is not None:
        r = list(env_cfg.frame_skip_range)
        if len(r) != 2 or not (1 <= r[0] <= r[1]):
            raise ConfigError(f"env.frame_skip_range={r} must be [low, high] with 1 <= low <= high")
        if env_cfg.preprocess != "karpathy":
            raise ConfigError(
                f"env.frame_skip_range={r} needs env.preprocess=karpathy (Pong-v0's random skip); "
                "the standard recipe repeats each action env.frame_skip times"
            )
    if env_cfg.action_set:
        n = 18 if env_cfg.full_action_space else num_actions(env_cfg.game)
        chosen = list(env_cfg.action_set)
        if any(not 0 <= a < n for a in chosen) or len(set(chosen)) != len(chosen):
            raise ConfigError(
                f"env.action_set={chosen} must list distinct actions of {env_cfg.game}'s "
                f"{'full' if env_cfg.full_action_space else 'minimal'} action set, 0..{n - 1}"
            )
    if env_cfg.backend == "ale_vector" and env_cfg.preprocess == "karpathy":
        raise ConfigError(
            "env.backend=ale_vector cannot do env.preprocess=karpathy; "
            "use env.backend=procs (or sync)"
        )


@functools.cache
def num_actions(game: str) -> int:
    """The size of a game's minimal action set (what env.action_set indexes)."""
    import ale_py
    from ale_py import roms

    _quiet_ale()
    ale = ale_py.ALEInterface()
    ale.loadROM(roms.get_rom_path(game))
    return len(ale.getMinimalActionSet())


def _ale_env(env_cfg: DictConfig, obs_type: str, frameskip, render: bool) -> gym.Env:
    from ale_py.env import AtariEnv

    _quiet_ale()
    return AtariEnv(
        game=env_cfg.game,
        obs_type=obs_type,
        frameskip=frameskip,
        repeat_action_probability=float(env_cfg.sticky_actions),
        full_action_space=bool(env_cfg.full_action_space),
        max_num_frames_per_episode=int(env_cfg.max_episode_frames),
        render_mode="rgb_array" if render else None,
    )


class NoopReset(gym.Wrapper):
    """After reset, take 1..noop_max no-ops (drawn from the env's RNG, as AtariPreprocessing), or
    where a reset names its start (eval.noop_sweep: `options["noop_start"]` = j in [0, noop_max)),
    exactly j + 1."""

    def __init__(self, env: gym.Env, noop_max: int = 30):
        super().__init__(env)
        self.noop_max = noop_max

    def reset(self, *, seed=None, options=None):
        noops = None
        if options and "noop_start" in options:
            options = dict(options)
            noops = int(options.pop("noop_start")) + 1
        obs, info = self.env.reset(seed=seed, options=options)
        if noops is None:
            if self.noop_max <= 0:
                return obs, info
            noops = self.env.unwrapped.np_random.integers(1, self.noop_max + 1)
        for _ in range(noops):
            obs, _, terminated, truncated, step_info = self.env.step(0)
            info.update(step_info)
            if terminated or truncated:
                obs, info = self.env.reset(seed=seed, options=options)
        return obs, info


class SkipMaxGray(gym.Wrapper):
    """Repeat each action `skip` times on the emulator; observe the max of the last two grayscale
    screens (removes Atari sprite flicker). Talks to ALE directly: one call per emulator frame.

    Like AtariPreprocessing, an episode that ends inside the skip keeps the screens grabbed so far.
    """

    def __init__(self, env: gym.Env, skip: int = 4, max_pool: bool = True):
        super().__init__(env)
        self.skip = skip
        self.max_pool = max_pool and skip > 1
        self.ale = env.unwrapped.ale
        self._actions = env.unwrapped._action_set
        h, w = self.ale.getScreenDims()
        self._buf = np.zeros((2, h, w), np.uint8)
        self.observation_space = gym.spaces.Box(0, 255, (h, w), np.uint8)

    def reset(self, *, seed=None, options=None):
        _, info = self.env.reset(seed=seed, options=options)
        self.ale.getScreenGrayscale(self._buf[0])
        self._buf[1].fill(0)
        return self._observe(), {"lives": self.ale.lives()}

    def step(self, action):
        ale, buf, skip = self.ale, self._buf, self.skip
        ale_action = self._actions[action]
        reward = 0.0
        terminated = truncated = False
        for t in range(skip):
            reward += ale.act(ale_action)
            terminated = ale.game_over(with_truncation=False)
            truncated = ale.game_truncated()
            if terminated or truncated:
                break
            if t == skip - 2:
                ale.getScreenGrayscale(buf[1])
            elif t == skip - 1:
                ale.getScreenGrayscale(buf[0])
        return self._observe(), reward, terminated, truncated, {"lives": ale.lives()}

    def _observe(self) -> np.ndarray:
        if self.max_pool:
            np.maximum(self._buf[0], self._buf[1], out=self._buf[0])
        return self._buf[0].copy()


class FireReset(gym.Wrapper):
    """Press FIRE once after reset in games whose play only starts on FIRE (Breakout, ...)."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        meanings = env.unwrapped.get_action_meanings()
        self.fire = meanings.index("FIRE") if "FIRE" in meanings else None

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        if self.fire is None:
            return obs, info
        obs, _, terminated, truncated, info = self.env.step(self.fire)
        if terminated or truncated:
            obs, info = self.env.reset(seed=seed, options=options)
        return obs, info


class KarpathyDiff(gym.Wrapper):
    """pg-pong's preprocessing: crop rows 35:195, every 2nd pixel of the red channel (80x80),
    erase the background (144, 109), everything else -> 1; observe the difference of consecutive
    frames (zeros on an episode's first frame). Output: float32 (6400,) in {-1, 0, 1}."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._prev = None
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (6400,), np.float32)

    @staticmethod
    def preprocess(frame: np.ndarray) -> np.ndarray:
        red = frame[35:195:2, ::2, 0]
        return ((red != 144) & (red != 109)).astype(np.float32).ravel()

    def reset(self, **kwargs):
        frame, info = self.env.reset(**kwargs)
        self._prev = self.preprocess(frame)
        return np.zeros(6400, np.float32), info

    def step(self, action):
        frame, reward, terminated, truncated, info = self.env.step(action)
        cur = self.preprocess(frame)
        diff = cur - self._prev
        self._prev = cur
        return diff, reward, terminated, truncated, info


class KarpathyAle(gym.Wrapper):
    """KarpathyDiff's exact output, fast: talks to ALE directly (the same random frame skip drawn
    from the env's RNG as AtariEnv.step) and reads the screen as palette indices through a lookup
    table (palette index -> 1 unless its red value is background), skipping the RGB frame."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        base = env.unwrapped
        self.ale = base.ale
        self._actions = base._action_set
        self._skip = base._frameskip
        self._screen = np.zeros(self.ale.getScreenDims(), np.uint8)
        self._lut = np.full(256, -1, np.int16)  # palette index -> 0/1, filled on first sight
        self._prev = np.zeros(6400, np.float32)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (6400,), np.float32)

    def _preprocess(self) -> np.ndarray:
        self.ale.getScreen(self._screen)
        crop = self._screen[35:195:2, ::2]
        values = self._lut[crop]
        if (values < 0).any():  # a colour not seen yet: learn its red value from the RGB screen
            red = self.ale.getScreenRGB()[35:195:2, ::2, 0]
            unknown = values < 0
            self._lut[crop[unknown]] = ((red[unknown] != 144) & (red[unknown] != 109)).astype(
                np.int16
            )
            values = self._lut[crop]
        return values.astype(np.float32).ravel()

    def reset(self, **kwargs):
        _, info = self.env.reset(**kwargs)
        self._prev = self._preprocess()
        return np.zeros(6400, np.float32), {"lives": self.ale.lives()}

    def step(self, action):
        skip = self._skip
        if isinstance(skip, tuple):
            skip = self.env.unwrapped.np_random.integers(*skip)
        ale_action, reward = self._actions[action], 0.0
        for _ in range(skip):
            reward += self.ale.act(ale_action, 1.0)
        terminated = self.ale.game_over(with_truncation=False)
        truncated = self.ale.game_truncated()
        cur = self._preprocess()
        diff = cur - self._prev
        self._prev = cur
        return diff, reward, terminated, truncated, {"lives": self.ale.lives()}


def make_single(env_cfg: DictConfig, render: bool = False) -> gym.Env:
    """One Atari env with the configured recipe (no vector-level signals)."""
    if env_cfg.preprocess == "karpathy":
        if env_cfg.frame_skip_range is not None:
            lo, hi = env_cfg.frame_skip_range
            frameskip = (int(lo), int(hi) + 1)  # ALE samples uniformly in [lo, hi + 1)
        else:
            frameskip = int(env_cfg.frame_skip)
        env = _ale_env(env_cfg, "rgb", frameskip, render)
        env = KarpathyAle(env)  # == KarpathyDiff on the RGB frames, without them
    else:
        env = _ale_env(env_cfg, "grayscale", 1, render)
        env = NoopReset(env, int(env_cfg.noop_max))
        env = SkipMaxGray(env, int(env_cfg.frame_skip), bool(env_cfg.max_pool))
        if env_cfg.fire_reset:
            env = FireReset(env)
        env = ResizeFrame(env, int(env_cfg.resolution))
        env = ChannelsFirst(env)
        env = FrameStack(env, int(env_cfg.frame_stack))
    if env_cfg.action_set:
        env = ActionSubset(env, list(env_cfg.action_set))
    return env


def frames_per_step(env_cfg: DictConfig) -> int:
    if env_cfg.frame_skip_range is not None:
        lo, hi = env_cfg.frame_skip_range
        return max(1, round((lo + hi) / 2))
    return int(env_cfg.frame_skip)


def video_fps(env_cfg: DictConfig) -> int:
    return max(1, round(ALE_FPS / frames_per_step(env_cfg)))


class AleNoopStarts(gym.vector.VectorWrapper):
    """ale-py's vector env draws each game's start in C++: j uniform in [0, noop_max) from a
    std::mt19937 seeded at a seeded reset, then FIRE (one frame, where the game has it and
    fire_reset is on) and j - 1 no-op frames, or j no-op frames without FIRE: j frames before
    the first agent step either way (1 for j = 0 with FIRE). A reset that names its start
    (eval.noop_sweep: `options["noop_start"]` = j) reseeds the copies it resets with a seed whose
    first draw is j, and checks from their episode frame numbers that the games started there."""

    def __init__(self, env: gym.vector.VectorEnv, noop_max: int):
        super().__init__(env)
        self.noop_max = noop_max
        self._seeds: dict[int, int] = {}  # start -> the first seed that draws it

    def reset(self, *, seed=None, options=None):
        if not options or "noop_start" not in options:
            return self.env.reset(seed=seed, options=options)
        options = dict(options)
        start = int(options.pop("noop_start"))
        mask = options.get("reset_mask")
        mask = np.ones(self.num_envs, bool) if mask is None else np.asarray(mask, bool)
        seeds = np.full(int(mask.sum()), self._seed_for(start), np.int64)
        obs, info = self.env.reset(seed=seeds, options=options or None)
        got = np.asarray(info["episode_frame_number"])[mask]
        if not np.isin(got, (start, max(start, 1))).all():
            raise RuntimeError(
                f"ale-py's vector env started games {got.tolist()} frames in, where no-op start "
                f"{start} is {start} frames in: its reset no longer draws as this wrapper expects"
            )
        return obs, info

    def _seed_for(self, start: int) -> int:
        if not 0 <= start < self.noop_max:
            raise ValueError(f"noop_start={start} is not in [0, env.noop_max={self.noop_max})")
        seed = max(self._seeds.values(), default=-1) + 1
        while start not in self._seeds:
            # std::mt19937(seed)'s first output (numpy's legacy seeding is the same init), then
            # libstdc++'s uniform_int_distribution over noop_max values (Lemire's method; reset
            # checks the frame number, so a build that draws otherwise is an error, not a miss)
            x = int(np.random.RandomState(seed).randint(0, 2**32, dtype=np.uint64))
            self._seeds.setdefault((x * self.noop_max) >> 32, seed)
            seed += 1
        return self._seeds[start]


def make_ale_vector(env_cfg: DictConfig, num_envs: int, num_threads: int) -> gym.vector.VectorEnv:
    """ale-py's C++ vector env with the standard recipe built in. Episodic life and reward
    clipping are left to EpisodeSignals so that raw scores stay visible."""
    from ale_py.vector_env import AtariVectorEnv

    _quiet_ale()
    return AtariVectorEnv(
        env_cfg.game,
        num_envs,
        num_threads=num_threads,
        repeat_action_probability=float(env_cfg.sticky_actions),
        full_action_space=bool(env_cfg.full_action_space),
        max_num_frames_per_episode=int(env_cfg.max_episode_frames),
        img_height=int(env_cfg.resolution),
        img_width=int(env_cfg.resolution),
        grayscale=True,
        stack_num=int(env_cfg.frame_stack),
        frameskip=int(env_cfg.frame_skip),
        maxpool=bool(env_cfg.max_pool),
        noop_max=int(env_cfg.noop_max),
        episodic_life=False,
        life_loss_info=False,
        reward_clipping=False,
        use_fire_reset=bool(env_cfg.fire_reset),
        autoreset_mode="SameStep",
    )
