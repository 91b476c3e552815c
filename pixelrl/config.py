"""The configuration schema (dataclasses in Hydra's ConfigStore) and its value checks.

Hydra composes `conf/` on top of these dataclasses, so a wrong *type* (`algo.lr=abc`) is caught at
composition; `validate()` then checks *values* (ranges, choices, combinations) and raises
`ConfigError` with one line that names the key, the value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


class ConfigError(ValueError):
    """A bad configuration value; its message is one line meant for the user."""


# --------------------------------------------------------------------------------------------
# Top-level sections
# --------------------------------------------------------------------------------------------


@dataclass
class WandbConfig:
    mode: str = "offline"  # offline (default, no network) | online | disabled
    project: str = "pixelrl"
    entity: str | None = None
    group: str | None = None  # sweeps default to the sweep's directory name
    name: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    progress: bool = True  # tqdm bar on a terminal, a status line every print_every_s otherwise
    print_every_s: float = 30.0
    fps_every_s: float = 10.0  # how often train/fps is written


@dataclass
class EvalConfig:
    every_frames: int = 1_000_000  # 0 disables periodic evaluation
    episodes: int = 10
    num_envs: int = 4  # episodes run in parallel
    final: bool = True  # evaluate once more at the end of training
    # time-to-solve runs: stop training once an evaluation's mean return reaches this (null: never)
    target_return: float | None = None
    # skip periodic evaluations while the mean return of the last 20 training episodes is below
    # this (null: always evaluate); cheap early training, frequent evaluations near the target
    min_train_return: float | None = None


@dataclass
class VideoConfig:
    enabled: bool = True  # record one episode at each evaluation (and in mode=watch)
    max_steps: int = 4_000  # agent steps per video
    fps: int = 0  # 0: the env's natural rate (60 / frame skip for Atari)
    episodes: int = 1  # episodes recorded in mode=watch


@dataclass
class CheckpointConfig:
    every_frames: int = 1_000_000  # 0: only at the end
    include_replay: bool = False  # DDPG: store the replay buffer too (large)


@dataclass
class ModelConfig:
    trunk: str = "nature"  # nature | a3c | drq | mlp
    hidden: int | None = None  # width of the trunk's last layer; null = the trunk's default
    mlp_layers: int = 1  # mlp trunk: number of hidden layers
    bias: bool = True
    init: str = "orthogonal"  # orthogonal | karpathy (N(0,1)/sqrt(fan_in), pg-pong)
    policy_head: str = "softmax"  # softmax | sigmoid (two actions, P(first) = sigmoid(z): pg-pong)


# --------------------------------------------------------------------------------------------
# Environments
# --------------------------------------------------------------------------------------------


@dataclass
class EnvConfig:
    name: str = MISSING  # the option name (env=Pong)
    kind: str = MISSING  # atari | toy | control | dmc
    backend: str = "sync"  # sync | async | ale_vector (Atari) | procs (multi-env worker processes)
    frame_stack: int = 4
    clip_rewards: bool = False  # training only; evaluation always reports the raw score
    episodic_life: bool = False  # training only
    max_episode_frames: int = 108_000


@dataclass
class AtariEnvConfig(EnvConfig):
    kind: str = "atari"
    backend: str = "ale_vector"
    game: str | None = None  # ALE ROM id in snake_case: pong, breakout, space_invaders, ...
    preprocess: str = "standard"  # standard (DQN/A3C) | karpathy (Pong from Pixels)
    sticky_actions: float = 0.0  # repeat_action_probability: 0.0 (v4/NoFrameskip) or 0.25 (v5/v0)
    frame_skip: int = 4
    frame_skip_range: list[int] | None = None  # e.g. [2, 4]: random skip per step (Pong-v0)
    max_pool: bool = True  # max over the last two raw frames of each skip
    noop_max: int = 30
    fire_reset: bool = True
    episodic_life: bool = True
    clip_rewards: bool = True
    resolution: int = 84
    frame_stack: int = 4
    full_action_space: bool = False
    action_set: list[int] | None = None  # a subset of the minimal action set, e.g. [2, 3]


@dataclass
class ToyEnvConfig(EnvConfig):
    kind: str = "toy"
    backend: str = "sync"
    rows: int = 10
    cols: int = 5
    scale: int = 2  # pixels per grid cell
    frame_stack: int = 1
    max_episode_frames: int = 1_000


@dataclass
class ControlEnvConfig(EnvConfig):
    kind: str = "control"  # control (gymnasium / toy) | dmc (DeepMind Control Suite)
    backend: str = "sync"
    id: str = MISSING  # gymnasium id (Pendulum-v1, CarRacing-v3) or Reach (toy)
    task: str | None = None  # dmc: <domain>_<task>, e.g. cartpole_swingup
    action_repeat: int = 2  # DrQ-v2; the PlaNet-100k protocol uses 8 for cartpole
    resolution: int = 84  # square frames (84 or 64)
    frame_stack: int = 3
    grayscale: bool = False
    camera: int = 0  # dmc camera id (DrQ-v2 uses 2 for quadruped)
    max_episode_frames: int = 1_000  # env frames (before action repeat)


# --------------------------------------------------------------------------------------------
# Algorithms
# --------------------------------------------------------------------------------------------


@dataclass
class AlgoConfig:
    name: str = MISSING
    gamma: float = 0.99
    lr: float = 7e-4
    optimizer: str = "rmsprop"
    rmsprop_alpha: float = 0.99
    eps: float = 1e-5
    max_grad_norm: float = 0.5  # 0 disables clipping
    lr_decay: str = "linear"  # linear (to 0 at total_frames) | none


@dataclass
class ActorCriticConfig(AlgoConfig):
    name: str = "actor_critic"
    num_envs: int = 16
    n_steps: int = 5
    psi: str = "advantage"  # td | q | advantage | gae
    gae_lambda: float = 0.95
    entropy_coef: float = 0.01
    value_coef: float = 0.5
    # the loss's forward pass: fp32 (graphs kept while acting) | bf16 (act without graphs, then one
    # forward over the whole rollout with the trunk under bf16 autocast; heads, losses, weights fp32)
    # | auto (bf16 where the hardware multiplies it natively: AMX CPUs, CUDA with bf16)
    precision: str = "auto"


@dataclass
class A3CConfig(ActorCriticConfig):
    name: str = "a3c"
    num_workers: int = 2  # actor-learner processes; 0 runs the same code serially in-process
    num_envs: int = 8  # envs per worker (batched acting inside each worker)
    n_steps: int = 5  # t_max of the A3C paper
    optimizer: str = "shared_rmsprop"  # shared_rmsprop | shared_adam
    lr: float = 7e-4
    eps: float = 1e-5
    max_grad_norm: float = 0.5
    lock_optimizer: bool = True  # serialize step() so interleaved steps never mix statistics
    gae_lambda: float = 1.0


@dataclass
class ReinforceConfig(AlgoConfig):
    name: str = "reinforce"
    num_envs: int = 10  # episodes played at once; equal to batch_episodes keeps it on-policy
    batch_episodes: int = 10
    psi: str = "reward_to_go"  # total | reward_to_go | baseline
    baseline: str = "value"  # value (learned head) | running_mean
    baseline_decay: float = 0.99  # running_mean baseline
    reset_on_reward: bool = False
    normalize_returns: str = "batch"  # none | episode (pg-pong) | batch
    entropy_coef: float = 0.0
    value_coef: float = 0.5
    optimizer: str = "rmsprop"
    lr: float = 1e-3
    max_grad_norm: float = 0.0
    lr_decay: str = "none"
    update_chunk: int = 4096  # samples per forward/backward chunk when accumulating gradients
    wait_for_batch: bool = True  # exact: all episodes of a batch by one policy; false: pipelined
    # where the policy plays: batched (envs in processes, any network, forward passes batched in
    # the learner) | workers (each env process plays and differentiates whole episodes with a
    # numpy copy of a one-hidden-layer MLP: pg-pong's fast path) | auto (workers where possible)
    collector: str = "auto"


@dataclass
class DDPGConfig(AlgoConfig):
    name: str = "ddpg"
    num_envs: int = 1
    lr: float = 1e-4
    optimizer: str = "adam"
    eps: float = 1e-8
    max_grad_norm: float = 0.0
    lr_decay: str = "none"
    batch_size: int = 256
    buffer_size: int = 100_000  # frames kept (one per transition, plus one per episode)
    warmup_frames: int = 4_000  # uniform random actions before learning starts
    update_every: int = 2  # env steps between updates
    updates_per_step: int = 1
    n_step: int = 3
    tau: float = 0.01  # soft target update: target <- tau * online + (1 - tau) * target
    encoder: str = "drq"  # conv layers of the shared encoder: drq | nature | a3c
    feature_dim: int = 50
    hidden_dim: int = 1024
    augment: bool = True  # random shift (pad 4), DrQ
    augment_pad: int = 4
    # DrQ (Kostrikov et al. 2020): the critic's target averaged over target_augs shifts of s', its
    # loss over q_augs shifts of s (1 and 1: DrQ-v2; DrQ used 2 and 2); each needs augment=true
    target_augs: int = 1
    q_augs: int = 1
    noise: str = "gaussian"  # gaussian (DrQ-v2 decaying schedule) | ou (DDPG paper)
    noise_std_start: float = 1.0
    noise_std_end: float = 0.1
    noise_decay_frames: int = 500_000
    target_smoothing: bool = True  # clipped noise on the target action (DrQ-v2, TD3)
    noise_clip: float = 0.3  # clip of the target-smoothing noise
    ou_theta: float = 0.15
    ou_sigma: float = 0.2
    double_q: bool = False  # two Q heads, min of the targets (clipped double-Q); off stays DDPG
    # weight of mean(sum over action dims of u^2), u = the actor's input to tanh, in the actor's
    # loss: keeps the actor out of tanh's flat tails, where Adam walks it ever further out
    pre_tanh_l2: float = 0.0
    # the encoder's convolutions in the update: fp32 | bf16 (autocast; heads, losses and weights
    # stay fp32) | auto (bf16 where the hardware multiplies it natively: AMX CPUs, CUDA with bf16)
    precision: str = "auto"
    # where the replay frames live: auto (on the training GPU when they take at most half of its
    # free memory, else in RAM) | cpu | cuda (the training GPU, an error if they don't fit)
    replay_device: str = "auto"


# --------------------------------------------------------------------------------------------
# Root
# --------------------------------------------------------------------------------------------


@dataclass
class Config:
    defaults: list[Any] = field(default_factory=lambda: ["_self_"])
    mode: str = "train"  # train | eval | watch
    algo: Any = MISSING
    env: Any = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = 1
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    torch_threads: int = 0  # 0: all cores for single-process algos, 1 per A3C worker
    total_frames: int = 20_000_000  # emulator frames, frame skip included (Atari convention)
    resume: str | None = None  # checkpoint file or run dir: continue training
    load: str | None = None  # checkpoint file or run dir: for mode=eval|watch
    eval: EvalConfig = field(default_factory=EvalConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


def _run_name(mode: str, algo: str, env: str, load: str | None) -> str:
    """The run dir's suffix: <algo>_<env> for training, <mode>_<trained run> for eval/watch."""
    if mode == "train" or not load:
        return f"{algo}_{env}"
    from pathlib import Path

    p = Path(str(load))
    if p.suffix == ".pt":
        p = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    return f"{mode}_{p.name or 'checkpoint'}"


ALGO_SCHEMAS = {
    "actor_critic": ActorCriticConfig,
    "a3c": A3CConfig,
    "reinforce": ReinforceConfig,
    "ddpg": DDPGConfig,
}


def register_configs() -> None:
    if not OmegaConf.has_resolver("pixelrl_run_name"):
        OmegaConf.register_new_resolver("pixelrl_run_name", _run_name)
    cs = ConfigStore.instance()
    cs.store(name="pixelrl_schema", node=Config)
    # Schemas live outside the `algo`/`env` groups so they never show up as options.
    for name, node in ALGO_SCHEMAS.items():
        cs.store(group="schema/algo", name=name, node=node)
    for name, node in [
        ("atari", AtariEnvConfig),
        ("toy", ToyEnvConfig),
        ("control", ControlEnvConfig),
    ]:
        cs.store(group="schema/env", name=name, node=node)


# --------------------------------------------------------------------------------------------
# Value checks
# --------------------------------------------------------------------------------------------

CONTINUOUS_ALGOS = ("ddpg",)
CONTINUOUS_ENV_KINDS = ("control", "dmc")
CONTINUOUS_ENVS = ("Pendulum", "CarRacing", "dmc", "Reach")
DISCRETE_ENVS = ("Pong", "Breakout", "atari", "Catch")

CHOICES = {
    "mode": ("train", "eval", "watch"),
    "model.trunk": ("nature", "a3c", "drq", "mlp"),
    "model.init": ("orthogonal", "karpathy"),
    "model.policy_head": ("softmax", "sigmoid"),
    "logger.wandb.mode": ("offline", "online", "disabled"),
    "env.kind": ("atari", "toy", "control", "dmc"),
    "env.backend": ("sync", "async", "ale_vector", "procs"),
    "env.preprocess": ("standard", "karpathy"),
    "algo.lr_decay": ("linear", "none"),
}
ALGO_CHOICES = {
    "actor_critic": {
        "algo.psi": ("td", "q", "advantage", "gae"),
        "algo.optimizer": ("rmsprop", "adam"),
        "algo.precision": ("auto", "fp32", "bf16"),
    },
    "a3c": {
        "algo.psi": ("advantage", "gae", "td", "q"),
        "algo.optimizer": ("shared_rmsprop", "shared_adam"),
        "algo.precision": ("auto", "fp32", "bf16"),
    },
    "reinforce": {
        "algo.psi": ("total", "reward_to_go", "baseline"),
        "algo.baseline": ("value", "running_mean"),
        "algo.normalize_returns": ("none", "episode", "batch"),
        "algo.optimizer": ("rmsprop", "adam"),
        "algo.collector": ("auto", "batched", "workers"),
    },
    "ddpg": {
        "algo.noise": ("gaussian", "ou"),
        "algo.optimizer": ("adam",),
        "algo.encoder": ("drq", "nature", "a3c"),
        "algo.precision": ("auto", "fp32", "bf16"),
        "algo.replay_device": ("auto", "cpu", "cuda"),
    },
}

# key -> (lower bound, inclusive?) ; every listed key must be above (or at) its bound
_LOWER_BOUNDS = {
    "total_frames": (0, False),
    "eval.every_frames": (0, True),
    "eval.episodes": (0, False),
    "eval.num_envs": (0, False),
    "video.max_steps": (0, False),
    "video.fps": (0, True),
    "video.episodes": (0, False),
    "checkpoint.every_frames": (0, True),
    "torch_threads": (0, True),
    "env.frame_stack": (0, False),
    "env.max_episode_frames": (0, False),
    "algo.lr": (0, False),
    "algo.eps": (0, False),
    "algo.max_grad_norm": (0, True),
    "algo.gamma": (0, True),
    "algo.num_envs": (0, False),
    "algo.n_steps": (0, False),
    "algo.num_workers": (0, True),
    "algo.batch_episodes": (0, False),
    "algo.entropy_coef": (0, True),
    "algo.value_coef": (0, True),
    "algo.update_chunk": (0, False),
    "algo.batch_size": (0, False),
    "algo.buffer_size": (0, False),
    "algo.warmup_frames": (0, True),
    "algo.update_every": (0, False),
    "algo.updates_per_step": (0, False),
    "algo.n_step": (0, False),
    "algo.feature_dim": (0, False),
    "algo.hidden_dim": (0, False),
    "algo.augment_pad": (0, True),
    "algo.target_augs": (1, True),
    "algo.q_augs": (1, True),
    "algo.noise_std_start": (0, True),
    "algo.noise_std_end": (0, True),
    "algo.noise_decay_frames": (0, False),
    "algo.noise_clip": (0, True),
    "algo.pre_tanh_l2": (0, True),
    "algo.ou_theta": (0, True),
    "algo.ou_sigma": (0, True),
    "algo.tau": (0, False),
    "env.camera": (0, True),
    "env.frame_skip": (0, False),
    "env.noop_max": (0, True),
    "env.resolution": (7, False),
    "env.action_repeat": (0, False),
    "env.rows": (2, False),
    "env.cols": (1, False),
    "env.scale": (0, False),
    "model.hidden": (0, False),
    "model.mlp_layers": (0, False),
}
# key -> inclusive upper bound
_UPPER_BOUNDS = {
    "algo.gamma": 1.0,
    "algo.gae_lambda": 1.0,
    "algo.rmsprop_alpha": 1.0,
    "algo.baseline_decay": 1.0,
    "algo.tau": 1.0,
    "env.sticky_actions": 1.0,
}


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def validate(cfg: DictConfig) -> None:
    """Check values and combinations; raise ConfigError with a one-line message."""
    choices = dict(CHOICES)
    choices.update(ALGO_CHOICES.get(cfg.algo.name, {}))
    for key, allowed in choices.items():
        value = _get(cfg, key)
        if value is not None and value not in allowed:
            raise ConfigError(
                f"{key}={_fmt(value)} is not allowed; choose one of: {', '.join(allowed)}"
            )
    for key, (bound, inclusive) in _LOWER_BOUNDS.items():
        value = _get(cfg, key)
        if value is None or isinstance(value, bool):
            continue
        if value < bound or (value == bound and not inclusive):
            rel = ">=" if inclusive else ">"
            raise ConfigError(f"{key}={_fmt(value)} is out of range; it must be {rel} {bound}")
    for key, bound in _UPPER_BOUNDS.items():
        value = _get(cfg, key)
        if value is not None and not (0 <= value <= bound):
            raise ConfigError(f"{key}={_fmt(value)} is out of range; it must be in [0, {bound}]")
    _validate_device(cfg.device)
    if cfg.mode in ("eval", "watch") and not cfg.load:
        raise ConfigError(
            f"mode={cfg.mode} needs a checkpoint: add load=PATH (a .pt file or a run dir)"
        )
    env = cfg.env
    if env.kind == "atari":
        _validate_atari(cfg)
    continuous = env.kind in CONTINUOUS_ENV_KINDS
    if cfg.algo.name in CONTINUOUS_ALGOS and not continuous:
        raise ConfigError(
            f"algo={cfg.algo.name} needs continuous actions but env={env.name} is discrete; "
            f"use one of the continuous envs: {', '.join(CONTINUOUS_ENVS)}"
        )
    if cfg.algo.name not in CONTINUOUS_ALGOS and continuous:
        raise ConfigError(
            f"algo={cfg.algo.name} needs discrete actions but env={env.name} is continuous; "
            f"use algo=ddpg, or a discrete env: {', '.join(DISCRETE_ENVS)}"
        )
    if cfg.algo.name == "reinforce" and cfg.algo.collector == "workers":
        from pixelrl.algos.episode_workers import unsupported_reason

        reason = unsupported_reason(cfg)
        if reason is not None:
            raise ConfigError(f"algo.collector=workers is not possible here: {reason}")
    if cfg.algo.name == "ddpg" and not cfg.algo.augment:
        for key in ("target_augs", "q_augs"):
            if cfg.algo[key] > 1:
                raise ConfigError(
                    f"algo.{key}={cfg.algo[key]} averages over random shifts, but "
                    "algo.augment=false: the copies would all be the same; set algo.augment=true "
                    f"or algo.{key}=1"
                )
    if cfg.algo.name == "reinforce" and cfg.algo.num_envs > cfg.algo.batch_episodes:
        raise ConfigError(
            f"algo.num_envs={cfg.algo.num_envs} must be <= algo.batch_episodes="
            f"{cfg.algo.batch_episodes}: every episode of a batch is played by the same policy"
        )


def _validate_device(device: str) -> None:
    ok = device in ("auto", "cpu", "cuda", "mps")
    if device.startswith("cuda:"):
        ok = device[5:].isdigit()
    if not ok:
        raise ConfigError(
            f"device={_fmt(device)} is not allowed; choose one of: auto, cpu, cuda, cuda:N, mps"
        )


def _validate_atari(cfg: DictConfig) -> None:
    from pixelrl.envs.atari import available_games  # local: keeps the schema import light

    env = cfg.env
    games = available_games()
    if not env.game:
        raise ConfigError(
            f"env.game is required for env={env.name}; e.g. env.game=space_invaders (ALE ROM ids: {len(games)} games, {', '.join(games[:6])}, ...)"
        )
    if env.game not in games:
        close = [g for g in games if env.game.lower().replace("-", "_") in g]
        hint = (
            f"; did you mean: {', '.join(close[:5])}"
            if close
            else f"; valid ids include: {', '.join(games[:8])}, ..."
        )
        raise ConfigError(f"env.game={_fmt(env.game)} is not an ALE ROM id (snake_case){hint}")
    if env.preprocess == "karpathy" and env.game != "pong":
        raise ConfigError(
            f"env.preprocess=karpathy needs env.game=pong (the crop rows 35:195 and the background "
            f"colours 144/109 are Pong's), got env.game={_fmt(env.game)}"
        )
    if env.frame_skip_range is not None:
        r = list(env.frame_skip_range)
        if len(r) != 2 or not (1 <= r[0] <= r[1]):
            raise ConfigError(f"env.frame_skip_range={r} must be [low, high] with 1 <= low <= high")
    if env.backend == "ale_vector":
        if env.preprocess == "karpathy" or env.frame_skip_range is not None:
            raise ConfigError(
                "env.backend=ale_vector cannot do env.preprocess=karpathy or a random "
                "env.frame_skip_range; use env.backend=procs (or sync)"
            )
