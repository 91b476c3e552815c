"""The configuration schema (dataclasses in Hydra's ConfigStore) and its value checks.

Hydra composes `conf/` on top of these dataclasses, so a wrong *type* (`algo.lr=abc`) is caught at
composition; `validate()` then checks *values* and raises `ConfigError` with one line that names
the key, the value and what is allowed. A key's allowed values and range are written once, beside
its default (`one_of(...)`, `bounded(...)`); checks that need an env family or an algorithm
(ROM ids, dm_control tasks, which collector can run a network) live with that family or algorithm
and are called by the app (`pixelrl.app.check_config`).

This module imports nothing from pixelrl but its errors, so every layer may read the schema.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from pixelrl.errors import ConfigError

__all__ = ["ConfigError", "Config", "validate", "register_configs"]


def one_of(default: Any, allowed: tuple) -> Any:
    """A key whose value must be one of `allowed` (checked by validate(), listed in errors)."""
    return field(default=default, metadata={"choices": tuple(allowed)})


def bounded(
    default: Any, gt: float | None = None, ge: float | None = None, le: float | None = None
):
    """A numeric key with bounds: > gt, >= ge, and within [0, le]."""
    return field(default=default, metadata={"gt": gt, "ge": ge, "le": le})


PRECISIONS = ("auto", "fp32", "bf16")

# --------------------------------------------------------------------------------------------
# Top-level sections
# --------------------------------------------------------------------------------------------


@dataclass
class WandbConfig:
    # offline: written under <run>/wandb, never needs a network; online: needs `wandb login`
    mode: str = one_of("offline", ("offline", "online", "disabled"))
    project: str = "pixelrl"
    entity: str | None = None
    group: str | None = None  # sweeps default to the sweep's directory name
    name: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    tensorboard: bool = True  # every metric also as TensorBoard scalars in <run>/tb (x: frames)
    progress: bool = True  # tqdm bar on a terminal, a status line every print_every_s otherwise
    print_every_s: float = bounded(30.0, gt=0)
    fps_every_s: float = bounded(10.0, ge=0)  # how often train/fps is written (0: every update)


@dataclass
class EvalConfig:
    every_frames: int = bounded(1_000_000, ge=0)  # 0 disables periodic evaluation
    episodes: int = bounded(10, gt=0)
    num_envs: int = bounded(4, gt=0)  # episodes run in parallel
    final: bool = True  # evaluate once more at the end of training
    # time-to-solve runs: stop training once an evaluation's mean return reaches this (null: never)
    target_return: float | None = None
    # ... and train on for this many frames past the first solve (a stronger final policy; its
    # solving policy is kept as checkpoints/target.pt); 0: stop at the solve
    frames_past_target: int = bounded(0, ge=0)
    # Atari, with frames_past_target: once solved, evaluations play at this repeat_action_probability
    # instead (null: as before), on games a later mode=eval never replays, logged as eval_select/*;
    # the first best of them is kept as checkpoints/select.pt (e.g. solve at 0.0, then follow and
    # pick at 0.25; a pick by 10-game means is mostly noise where the policies lie close: on seed 5
    # of the default, select.pt played 14.6 at 0.25 over 30 games and average.pt 15.0)
    select_sticky_actions: float | None = bounded(None, le=1.0)
    # skip periodic evaluations while the mean return of the last 20 training episodes is below
    # this (null: always evaluate); cheap early training, frequent evaluations near the target
    min_train_return: float | None = None
    # the best return one episode can reach in a game whose points conceded are final (Pong: 21;
    # null: unknown). With target_return, a periodic evaluation stops as soon as its mean can no
    # longer reach the target (logged as eval/return_bound, not as a mean): failed tries cost little
    max_return: float | None = None
    # Atari: the evaluation env's repeat_action_probability (null: env.sticky_actions); e.g. train
    # with env.sticky_actions=0.25 and still score the solve at 0.0, or the reverse
    sticky_actions: float | None = bounded(None, le=1.0)
    # evaluate (and keep in best.pt, target.pt and checkpoints/average.pt) the mean of the policy's
    # weights over its last average_frames of training, copies window/4 apart (pixelrl/averaging.py);
    # 0: the weights as they are. A3C Pong at 0.25: a policy at 1.8 became 15.2 (BENCHMARKS.md)
    average_frames: int = bounded(0, ge=0)
    # an evaluation episode that goes this many agent steps without a nonzero reward ends there,
    # scored as it stands (null: only the env's time limit ends it, the standard protocol). For
    # greedy play at sticky actions 0 that falls into endless rallies: faster, but points can
    # still come after long quiet stretches, so the score is not the standard one (BENCHMARKS.md)
    max_steps_without_reward: int | None = bounded(None, gt=0)
    # Atari: game k of an evaluation plays the env's no-op start k mod env.noop_max (in turn, not
    # drawn at random; our recipe: k mod noop_max + 1 no-ops; ale-py's vector env: its own draw).
    # At sticky actions 0 a greedy game is fixed by its start, so with episodes = noop_max (30)
    # the score is exact: the mean over every start, where 10 random games are a draw from them
    noop_sweep: bool = False


@dataclass
class VideoConfig:
    enabled: bool = True  # record one episode at each evaluation (and in mode=watch)
    max_steps: int = bounded(4_000, gt=0)  # agent steps per video
    fps: int = bounded(0, ge=0)  # 0: the env's natural rate (60 / frame skip for Atari)
    episodes: int = bounded(1, gt=0)  # episodes recorded in mode=watch


@dataclass
class CheckpointConfig:
    every_frames: int = bounded(1_000_000, ge=0)  # 0: only at the end
    keep: int = bounded(1, ge=1)  # periodic checkpoints kept (>1: also as frames_<frames>.pt)
    include_replay: bool = False  # DDPG: store the replay buffer too (large)


@dataclass
class ModelConfig:
    # conv trunks: nature (DQN), a3c (the A3C paper's, ~3x cheaper), drq (DrQ-v2's encoder)
    trunk: str = one_of("nature", ("nature", "a3c", "drq", "mlp"))
    hidden: int | None = bounded(None, gt=0)  # width of the trunk's last layer; null: default
    mlp_layers: int = bounded(1, gt=0)  # mlp trunk: number of hidden layers
    # conv trunks: relu | leaky_relu (slope 0.01: a trunk that cannot die) | elu
    activation: str = one_of("relu", ("relu", "leaky_relu", "elu"))
    bias: bool = True  # false: no biases in the trunk (convolutions included) or the policy head
    # conv trunks: subtract each frame's mean pixel from it (after /255), so that no input is
    # one-signed background: a first-layer unit's gradient then no longer moves all of its weights
    # the same way at once (how A3C's Pong trunk loses its conv1 channels, BENCHMARKS.md)
    center: bool = False
    # orthogonal, or karpathy: N(0,1)/sqrt(fan_in), pg-pong's
    init: str = one_of("orthogonal", ("orthogonal", "karpathy"))
    # softmax, or sigmoid: two actions, P(first) = sigmoid(z), pg-pong's
    policy_head: str = one_of("softmax", ("softmax", "sigmoid"))


# --------------------------------------------------------------------------------------------
# Environments
# --------------------------------------------------------------------------------------------

BACKENDS = ("sync", "async", "ale_vector", "procs")
ENV_KINDS = ("atari", "toy", "control", "dmc")


@dataclass
class EnvConfig:
    name: str = MISSING  # the option name (env=Pong)
    kind: str = one_of(MISSING, ENV_KINDS)
    # sync | async (gymnasium) | ale_vector (Atari, C++) | procs (several envs per process)
    backend: str = one_of("sync", BACKENDS)
    frame_stack: int = bounded(4, gt=0)
    clip_rewards: bool = False  # training only; evaluation always reports the raw score
    episodic_life: bool = False  # training only
    max_episode_frames: int = bounded(108_000, gt=0)


@dataclass
class AtariEnvConfig(EnvConfig):
    kind: str = one_of("atari", ENV_KINDS)
    backend: str = one_of("ale_vector", BACKENDS)
    game: str | None = None  # ALE ROM id in snake_case: pong, breakout, space_invaders, ...
    # standard (DQN/A3C) | karpathy (Pong from Pixels: crop, downsample, difference of frames)
    preprocess: str = one_of("standard", ("standard", "karpathy"))
    # repeat_action_probability: 0.0 (v4/NoFrameskip) or 0.25 (v5/v0)
    sticky_actions: float = bounded(0.0, le=1.0)
    frame_skip: int = bounded(4, gt=0)
    frame_skip_range: list[int] | None = None  # e.g. [2, 4]: random skip per step (Pong-v0)
    max_pool: bool = True  # max over the last two raw frames of each skip
    noop_max: int = bounded(30, ge=0)
    fire_reset: bool = True
    episodic_life: bool = True
    clip_rewards: bool = True
    resolution: int = bounded(84, gt=7)
    frame_stack: int = bounded(4, gt=0)
    full_action_space: bool = False
    action_set: list[int] | None = None  # a subset of the minimal action set, e.g. [2, 3]


@dataclass
class ToyEnvConfig(EnvConfig):
    kind: str = one_of("toy", ENV_KINDS)
    backend: str = one_of("sync", BACKENDS)
    rows: int = bounded(10, gt=2)
    cols: int = bounded(5, gt=1)
    scale: int = bounded(2, gt=0)  # pixels per grid cell
    frame_stack: int = bounded(1, gt=0)
    max_episode_frames: int = bounded(1_000, gt=0)


@dataclass
class ControlEnvConfig(EnvConfig):
    # control (gymnasium / toy) | dmc (DeepMind Control Suite)
    kind: str = one_of("control", ENV_KINDS)
    backend: str = one_of("sync", BACKENDS)
    id: str = MISSING  # gymnasium id (Pendulum-v1, CarRacing-v3) or Reach (toy)
    task: str | None = None  # dmc: <domain>_<task>, e.g. cartpole_swingup
    action_repeat: int = bounded(2, gt=0)  # DrQ-v2; the PlaNet-100k protocol uses 8 for cartpole
    resolution: int = bounded(84, gt=7)  # square frames (84 or 64)
    frame_stack: int = bounded(3, gt=0)
    grayscale: bool = False
    camera: int = bounded(0, ge=0)  # dmc camera id (DrQ-v2 uses 2 for quadruped)
    max_episode_frames: int = bounded(1_000, gt=0)  # env frames (before action repeat)


ENV_SCHEMAS = {"atari": AtariEnvConfig, "toy": ToyEnvConfig, "control": ControlEnvConfig}
CONTINUOUS_ENV_KINDS = ("control", "dmc")

# --------------------------------------------------------------------------------------------
# Algorithms
# --------------------------------------------------------------------------------------------


@dataclass
class AlgoConfig:
    name: str = MISSING
    gamma: float = bounded(0.99, le=1.0)
    lr: float = bounded(7e-4, gt=0)
    optimizer: str = one_of("rmsprop", ("rmsprop", "adam"))
    rmsprop_alpha: float = bounded(0.99, le=1.0)
    eps: float = bounded(1e-5, gt=0)
    max_grad_norm: float = bounded(0.5, ge=0)  # 0 disables clipping
    # linear: lr decays to 0 at total_frames | none
    lr_decay: str = one_of("linear", ("linear", "none"))
    # linear only: the lr is held at algo.lr up to this frame, then decays linearly to 0 at
    # total_frames (0: from the first frame; at or past total_frames: held throughout)
    lr_decay_from: int = bounded(0, ge=0)


@dataclass
class ActorCriticConfig(AlgoConfig):
    name: str = "actor_critic"
    num_envs: int = bounded(16, gt=0)
    n_steps: int = bounded(5, gt=0)
    # Psi_t: td (TD residual) | q (n-step return) | advantage (n-step return - V) | gae
    psi: str = one_of("advantage", ("td", "q", "advantage", "gae"))
    gae_lambda: float = bounded(0.95, le=1.0)
    entropy_coef: float = bounded(0.01, ge=0)
    value_coef: float = bounded(0.5, ge=0)
    # optimizer steps per rollout. 1: A2C/A3C, one gradient of -log pi Psi. More: each rollout is
    # reused epochs times under PPO's clipped surrogate, ratios to the acting policy clipped at
    # 1 +- clip_ratio (Schulman et al. 2017), for more learning per frame at more compute per frame
    epochs: int = bounded(1, gt=0)
    clip_ratio: float = bounded(0.1, gt=0)
    # the envs in this many groups that step in turn, each one's step started before the policy
    # acts for the next, so the forward pass overlaps the emulation (must divide num_envs). The
    # same rollout as one group, in another order of work; A2C only (A3C's workers own the cores)
    env_groups: int = bounded(1, gt=0)
    # the loss's forward pass: fp32 (graphs kept while acting) | bf16 (act without graphs, then one
    # forward over the whole rollout with the trunk under bf16 autocast; heads, losses, weights fp32)
    # | auto (bf16 where the hardware multiplies it natively: AMX CPUs, CUDA with bf16)
    precision: str = one_of("auto", PRECISIONS)


@dataclass
class A3CConfig(ActorCriticConfig):
    name: str = "a3c"
    num_workers: int = bounded(2, ge=0)  # actor-learner processes; 0: the same code serially
    num_envs: int = bounded(8, gt=0)  # envs per worker (batched acting inside each worker)
    n_steps: int = bounded(5, gt=0)  # t_max of the A3C paper; Pong: 10 (conf/algo_env/)
    optimizer: str = one_of("shared_rmsprop", ("shared_rmsprop", "shared_adam"))
    lr: float = bounded(7e-4, gt=0)
    # constant: decaying to 0 at total_frames (20M for Pong) halves the lr by 10M frames, where
    # Pong is still being learned; `none` solved the three seeds `linear` left unsolved (BENCHMARKS.md)
    lr_decay: str = one_of("none", ("linear", "none"))
    eps: float = bounded(1e-5, gt=0)
    # shared_rmsprop's form. torch: s starts at 0, w -= lr g / (sqrt(s) + eps): its first steps
    # are up to 10 lr, and a weight whose gradient was long near 0 gets up to lr g / eps when it
    # returns. tf (TensorFlow's RMSProp, the A3C paper's eq. in Supp. 8, OpenAI baselines' A2C):
    # s starts at 1 and eps is inside the root, w -= lr g / sqrt(s + eps): steps stay bounded
    rmsprop_form: str = one_of("torch", ("torch", "tf"))
    max_grad_norm: float = bounded(0.5, ge=0)
    lock_optimizer: bool = True  # serialize step() so interleaved steps never mix statistics
    gae_lambda: float = bounded(1.0, le=1.0)
    # dead and dormant trunk units (pixelrl/dormant.py): every recycle_every updates of a worker
    # (0: never), recycle_scope=dead_layers gives every unit of a trunk layer that is dead as a whole
    # (fewer than 0.1% of its outputs above 0 on its recent frames) fresh incoming and zero outgoing
    # weights; a live trunk is untouched. A dead A3C Pong trunk came back and solved (BENCHMARKS.md).
    # units (ReDo): every unit whose mean activation is <= recycle_tau x its layer's mean (0: units
    # that never fire), dead layer or not; it kept Pong's trunk rich but did not solve sooner
    recycle_every: int = bounded(500, ge=0)
    recycle_tau: float = bounded(0.0, le=1.0)
    recycle_scope: str = one_of("dead_layers", ("units", "dead_layers"))
    # Atari: worker r trains at sticky actions worker_sticky_actions[r % len] (a mix of settings
    # across the workers, e.g. [0.0, 0.25]); empty: every worker at env.sticky_actions. Evaluations
    # keep env.sticky_actions (or eval.sticky_actions). Pong, [0.0, 0.25]: solved policies scored
    # 7.4-10.7 at 0.25 (the default: 0.1-10.1) but one seed of 5 went unsolved (BENCHMARKS.md)
    worker_sticky_actions: list[float] = field(default_factory=list)


@dataclass
class ReinforceConfig(AlgoConfig):
    name: str = "reinforce"
    num_envs: int = bounded(10, gt=0)  # episodes played at once; = batch_episodes: on-policy
    batch_episodes: int = bounded(10, gt=0)
    # Psi_t: total (whole return) | reward_to_go | baseline (reward-to-go minus a baseline)
    psi: str = one_of("reward_to_go", ("total", "reward_to_go", "baseline"))
    # value (a learned head) | running_mean (of the returns)
    baseline: str = one_of("value", ("value", "running_mean"))
    baseline_decay: float = bounded(0.99, le=1.0)  # running_mean baseline
    reset_on_reward: bool = False  # restart the discounted sum at every nonzero reward (Pong)
    # standardize Psi: none | episode (pg-pong) | batch
    normalize_returns: str = one_of("batch", ("none", "episode", "batch"))
    entropy_coef: float = bounded(0.0, ge=0)
    value_coef: float = bounded(0.5, ge=0)
    optimizer: str = one_of("rmsprop", ("rmsprop", "adam"))
    lr: float = bounded(1e-3, gt=0)
    max_grad_norm: float = bounded(0.0, ge=0)
    lr_decay: str = one_of("none", ("linear", "none"))
    update_chunk: int = bounded(4096, gt=0)  # samples per forward/backward chunk
    wait_for_batch: bool = True  # exact: all episodes of a batch by one policy; false: pipelined
    # where the policy plays: batched (envs in processes, any network, forward passes batched in
    # the learner) | workers (each env process plays and differentiates whole episodes with a
    # numpy copy of a one-hidden-layer MLP: pg-pong's fast path) | auto (workers where possible)
    collector: str = one_of("auto", ("auto", "batched", "workers"))


@dataclass
class DDPGConfig(AlgoConfig):
    name: str = "ddpg"
    num_envs: int = bounded(1, gt=0)
    lr: float = bounded(1e-4, gt=0)
    optimizer: str = one_of("adam", ("adam",))
    eps: float = bounded(1e-8, gt=0)
    max_grad_norm: float = bounded(0.0, ge=0)
    lr_decay: str = one_of("none", ("linear", "none"))
    batch_size: int = bounded(256, gt=0)
    buffer_size: int = bounded(100_000, gt=0)  # frames kept (one per transition + one per episode)
    warmup_frames: int = bounded(4_000, ge=0)  # uniform random actions before learning starts
    update_every: int = bounded(2, gt=0)  # env steps between updates
    updates_per_step: int = bounded(1, gt=0)
    n_step: int = bounded(3, gt=0)
    tau: float = bounded(0.01, gt=0, le=1.0)  # soft target update: t <- tau * online + (1-tau) t
    encoder: str = one_of("drq", ("drq", "nature", "a3c"))  # conv layers of the shared encoder
    feature_dim: int = bounded(50, gt=0)
    hidden_dim: int = bounded(1024, gt=0)
    augment: bool = True  # random shift (pad 4), DrQ
    augment_pad: int = bounded(4, ge=0)
    # DrQ (Kostrikov et al. 2020): the critic's target averaged over target_augs shifts of s', its
    # loss over q_augs shifts of s (1 and 1: DrQ-v2; DrQ used 2 and 2); each needs augment=true
    target_augs: int = bounded(1, ge=1)
    q_augs: int = bounded(1, ge=1)
    # gaussian (DrQ-v2's decaying schedule) | ou (Ornstein-Uhlenbeck, the DDPG paper)
    noise: str = one_of("gaussian", ("gaussian", "ou"))
    noise_std_start: float = bounded(1.0, ge=0)
    noise_std_end: float = bounded(0.1, ge=0)
    noise_decay_frames: int = bounded(500_000, gt=0)
    target_smoothing: bool = True  # clipped noise on the target action (DrQ-v2, TD3)
    noise_clip: float = bounded(0.3, ge=0)  # clip of the target-smoothing noise
    ou_theta: float = bounded(0.15, ge=0)
    ou_sigma: float = bounded(0.2, ge=0)
    double_q: bool = False  # two Q heads, min of the targets (clipped double-Q); off stays DDPG
    # weight of mean(sum over action dims of u^2), u = the actor's input to tanh, in the actor's
    # loss: keeps the actor out of tanh's flat tails, where Adam walks it ever further out
    pre_tanh_l2: float = bounded(0.0, ge=0)
    # the encoder's convolutions in the update: fp32 | bf16 (autocast; heads, losses and weights
    # stay fp32) | auto (bf16 where the hardware multiplies it natively: AMX CPUs, CUDA with bf16)
    precision: str = one_of("auto", PRECISIONS)
    # where the replay frames live: auto (on the training GPU when they take at most half of its
    # free memory, else in RAM) | cpu | cuda (the training GPU, an error if they don't fit)
    replay_device: str = one_of("auto", ("auto", "cpu", "cuda"))


# seeds reach ALE and gymnasium as seed + offsets (envs, workers, evaluation): they must stay
# below 2**31 there
MAX_SEED = 1_000_000_000

ALGO_SCHEMAS = {
    "actor_critic": ActorCriticConfig,
    "a3c": A3CConfig,
    "reinforce": ReinforceConfig,
    "ddpg": DDPGConfig,
}
CONTINUOUS_ALGOS = ("ddpg",)

# --------------------------------------------------------------------------------------------
# Root
# --------------------------------------------------------------------------------------------


@dataclass
class Config:
    defaults: list[Any] = field(default_factory=lambda: ["_self_"])
    mode: str = one_of("train", ("train", "eval", "watch"))
    algo: Any = MISSING
    env: Any = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = bounded(1, ge=0, le=MAX_SEED)  # env i gets seed + i (A3C: + worker offsets)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps (checked by pixelrl.device)
    torch_threads: int = bounded(0, ge=0)  # 0: all cores for single-process algos, 1 per worker
    total_frames: int = bounded(20_000_000, gt=0)  # emulator frames, frame skip included
    resume: str | None = None  # checkpoint file or run dir: continue training
    load: str | None = None  # checkpoint file or run dir: for mode=eval|watch
    eval: EvalConfig = field(default_factory=EvalConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


def settings(node: DictConfig) -> types.SimpleNamespace:
    """A plain copy of a config node (`cfg.algo`) for a training loop to read every step: a
    DictConfig attribute read costs microseconds (type checks, interpolation), which added up to
    about a tenth of a short DDPG run's time (cProfile, 2-core EPYC); a namespace's costs
    nanoseconds. Values are resolved once; nested nodes become dicts."""
    return types.SimpleNamespace(**OmegaConf.to_container(node, resolve=True))


def _run_name(mode: str, algo: str, env: str, load: str | None, seed: int | None = None) -> str:
    """The run dir's suffix: <algo>_<env>_s<seed> for training, <mode>_<trained run> for
    eval/watch."""
    if mode == "train" or not load:
        return f"{algo}_{env}" + (f"_s{seed}" if seed is not None else "")
    p = Path(str(load))
    if p.suffix == ".pt":
        p = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    return f"{mode}_{p.name or 'checkpoint'}"


def register_configs() -> None:
    if not OmegaConf.has_resolver("pixelrl_run_name"):
        OmegaConf.register_new_resolver("pixelrl_run_name", _run_name)
    cs = ConfigStore.instance()
    cs.store(name="pixelrl_schema", node=Config)
    # Schemas live outside the `algo`/`env` groups so they never show up as options.
    for name, node in ALGO_SCHEMAS.items():
        cs.store(group="schema/algo", name=name, node=node)
    for name, node in ENV_SCHEMAS.items():
        cs.store(group="schema/env", name=name, node=node)


# --------------------------------------------------------------------------------------------
# The config files: option names and what they are
# --------------------------------------------------------------------------------------------


def conf_dir() -> Path:
    """conf/ (installed as the package pixelrl.conf)."""
    import importlib.resources

    try:
        return Path(str(importlib.resources.files("pixelrl.conf")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "conf"


def options(group: str) -> list[tuple[str, str]]:
    """(option, first comment line) for every yaml of a config group (env -> Pong, ...)."""
    out = []
    for path in sorted((conf_dir() / group).glob("*.yaml"), key=lambda p: p.stem.lower()):
        desc = ""
        for line in path.read_text().splitlines():
            if line.startswith("#") and not line.startswith("# @package"):
                desc = line.lstrip("# ").strip()
                break
        out.append((path.stem, desc))
    return out


@functools.lru_cache(maxsize=1)
def env_kinds() -> dict[str, str]:
    """env option -> env.kind, read from conf/env/*.yaml (its schema, or an explicit env.kind)."""
    kinds = {}
    for name, _ in options("env"):
        doc = OmegaConf.load(conf_dir() / "env" / f"{name}.yaml")
        kind = OmegaConf.select(doc, "env.kind")
        for entry in doc.get("defaults", []):
            if kind is None and isinstance(entry, str) and entry.startswith("/schema/env/"):
                kind = entry[len("/schema/env/") :].split("@")[0]
        kinds[name] = kind
    return kinds


def envs_for(continuous: bool) -> list[str]:
    return [n for n, k in env_kinds().items() if (k in CONTINUOUS_ENV_KINDS) == continuous]


# --------------------------------------------------------------------------------------------
# Value checks
# --------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _schema_fields(cls, prefix: str):
    """(key, dataclass field) for every field of a schema, nested sections included."""
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:
            nested = f.default_factory()
            if dataclasses.is_dataclass(nested):
                yield from _schema_fields(type(nested), f"{prefix}{f.name}.")
                continue
        yield f"{prefix}{f.name}", f


def _check_field(key: str, meta: dict, value: Any) -> None:
    if value is None or value is MISSING:
        return
    allowed = meta.get("choices")
    if allowed is not None and value not in allowed:
        raise ConfigError(
            f"{key}={_fmt(value)} is not allowed; choose one of: {', '.join(allowed)}"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    for bound, rel, ok in (
        (meta.get("gt"), ">", lambda v, b: v > b),
        (meta.get("ge"), ">=", lambda v, b: v >= b),
    ):
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"{key}={_fmt(value)} is out of range; it must be {rel} {bound}")
    high = meta.get("le")
    if high is not None and not (0 <= value <= high):
        raise ConfigError(f"{key}={_fmt(value)} is out of range; it must be in [0, {high}]")


def validate(cfg: DictConfig) -> None:
    """Check the values the schema declares and the combinations any algo and env share; raise
    ConfigError with a one-line message. Env-family and algorithm checks: app.check_config."""
    _check_field("env.kind", {"choices": ENV_KINDS}, cfg.env.kind)
    env_schema = ENV_SCHEMAS["control" if cfg.env.kind == "dmc" else cfg.env.kind]
    sections = [(Config, ""), (ALGO_SCHEMAS[cfg.algo.name], "algo."), (env_schema, "env.")]
    for schema, prefix in sections:
        for key, f in _schema_fields(schema, prefix):
            if f.metadata:
                _check_field(key, f.metadata, OmegaConf.select(cfg, key, default=None))
    if cfg.mode in ("eval", "watch") and not cfg.load:
        raise ConfigError(
            f"mode={cfg.mode} needs a checkpoint: add load=PATH (a .pt file or a run dir)"
        )
    if cfg.mode == "train" and cfg.load:
        raise ConfigError(
            f"load={cfg.load} is for mode=eval and mode=watch; to continue training it, use "
            f"resume={cfg.load}"
        )
    env = cfg.env
    continuous = env.kind in CONTINUOUS_ENV_KINDS
    if cfg.algo.name in CONTINUOUS_ALGOS and not continuous:
        raise ConfigError(
            f"algo={cfg.algo.name} needs continuous actions but env={env.name} is discrete; "
            f"use one of the continuous envs: {', '.join(envs_for(continuous=True))}"
        )
    if cfg.algo.name not in CONTINUOUS_ALGOS and continuous:
        raise ConfigError(
            f"algo={cfg.algo.name} needs discrete actions but env={env.name} is continuous; "
            f"use algo=ddpg, or a discrete env: {', '.join(envs_for(continuous=False))}"
        )
