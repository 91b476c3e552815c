"""One Hydra job: validate, seed, pick the device, then train, evaluate or watch.

Also the config's two entry points outside Hydra's app: `compose_config` (what the command line
would compose, for the Python API and the benchmarks) and `check_config` (every value check: the
schema's, the device's, the env family's and the algorithm's).
"""

from __future__ import annotations

import functools
import json
import math
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from pixelrl import algos, checkpoint, envs
from pixelrl.config import register_configs, validate
from pixelrl.device import (
    check_spec,
    cpu_multiplies_bf16,
    describe,
    keep_freed_memory,
    resolve_device,
)
from pixelrl.errors import CheckpointError, ConfigError, TrainingError
from pixelrl.run import Run, past_solve, seed_everything, solve_from_checkpoint
from pixelrl.tracking import check_wandb, summarize_returns


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError (one line) for any value or combination that cannot run."""
    validate(cfg)
    check_spec(cfg.device)
    check_wandb(cfg.logger.wandb.mode)
    envs.check(cfg.env)
    algo = algos.get(cfg.algo.name)
    if hasattr(algo, "check"):
        algo.check(cfg)
    if cfg.eval.sticky_actions is not None and "sticky_actions" not in cfg.env:
        raise ConfigError(
            f"eval.sticky_actions is for Atari envs (repeat_action_probability); "
            f"env={cfg.env.name} has no sticky actions: leave it null"
        )
    if cfg.eval.select_sticky_actions is not None and "sticky_actions" not in cfg.env:
        raise ConfigError(
            f"eval.select_sticky_actions is for Atari envs (repeat_action_probability); "
            f"env={cfg.env.name} has no sticky actions: leave it null"
        )
    if cfg.eval.noop_sweep and (
        cfg.env.kind != "atari" or cfg.env.preprocess == "karpathy" or not cfg.env.noop_max
    ):
        raise ConfigError(
            f"eval.noop_sweep plays each of env.noop_max no-op starts in turn; env={cfg.env.name} "
            "starts its games without no-ops (Atari with env.noop_max > 0 only): leave it false"
        )
    if cfg.algo.lr_decay_from and cfg.algo.lr_decay != "linear":
        raise ConfigError(
            f"algo.lr_decay_from={cfg.algo.lr_decay_from} is where a linear decay starts; "
            f"algo.lr_decay={cfg.algo.lr_decay} keeps the lr: add algo.lr_decay=linear or leave it 0"
        )
    if cfg.eval.average_frames and cfg.algo.name == "ddpg":
        raise ConfigError(
            "eval.average_frames averages the policy of a3c, actor_critic and reinforce; "
            "DDPG's actor is evaluated as it is: leave it 0"
        )
    if cfg.model.policy_head == "sigmoid" and cfg.algo.name != "ddpg":
        n = envs.num_actions(cfg.env)
        if n != 2:
            raise ConfigError(
                f"model.policy_head=sigmoid needs exactly 2 actions (P(first) = sigmoid(z)); "
                f"env={cfg.env.name} has {n}: use model.policy_head=softmax, or env.action_set=[a,b]"
            )


def validate_entry(cfg: DictConfig) -> None:
    """The checks that do not depend on the algorithm or env: a command line that resumes or
    loads a checkpoint was composed with the default algo and env, not the checkpoint's."""
    if cfg.mode in ("eval", "watch") and not cfg.load:
        validate(cfg)  # its one-line error names what is missing
    check_spec(cfg.device)
    check_wandb(cfg.logger.wandb.mode)


def compose_config(overrides: list[str] | None = None, check: bool = True) -> DictConfig:
    """The config that `python -m pixelrl <overrides>` would run (checked unless check=False)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    if GlobalHydra.instance().is_initialized():
        cfg = compose("config", overrides=list(overrides or []))
    else:
        with initialize_config_module("pixelrl.conf", version_base="1.3"):
            cfg = compose("config", overrides=list(overrides or []))
    if check:
        check_config(cfg)
    return cfg


def _first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


_EXPECTED = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}


def hydra_error_line(exc: BaseException) -> str | None:
    """A one-line message for Hydra/OmegaConf composition errors (None: not one of those)."""
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import ConfigAttributeError, OmegaConfBaseException, ValidationError

    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        return f"unknown {group} {option!r}; choose one of: {', '.join(exc.options or [])}"
    cause = exc.__cause__
    key = getattr(cause, "full_key", None) or ""
    if isinstance(cause, ConfigAttributeError) and key:
        return f"unknown config key {key!r} (python -m pixelrl --help lists the options)"
    if isinstance(cause, ValidationError) and key:
        # OmegaConf names the type it wanted only in its message
        m = re.search(r"could not be converted to (\w+)|is not a valid (bool)", cause.msg or "")
        target = (m.group(1) or "Boolean") if m else None
        if target:
            kind = _EXPECTED.get(target, target)
            return f"{key}={cause.value!r} is not valid: expected {kind}"
    m = re.search(r"An item is already at '([^']+)'", str(exc))  # Hydra's '+key=' on a key
    if m:
        return f"{m.group(1)} already exists; drop the '+' to override it"
    if isinstance(exc, (HydraException, OmegaConfBaseException)):
        line = _first_line(str(exc))
        if cause is not None and _first_line(str(cause)):
            line = (
                f"{key}: {_first_line(str(cause))}" if key else f"{line}: {_first_line(str(cause))}"
            )
        return line
    return None


def _hydra_context():
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    overrides = list(hc.overrides.task)
    group = job_name = None
    if hc.mode == RunMode.MULTIRUN:
        group = Path(hc.sweep.dir).name
        job_name = f"{group}/{hc.job.num}" + (
            f"_{hc.job.override_dirname}" if hc.job.override_dirname else ""
        )
    return run_dir, overrides, group, job_name


def _explicit(overrides: list[str], prefixes: tuple[str, ...]) -> list[str]:
    """Command-line overrides (key=value) under the given prefixes, without Hydra's +/~ forms."""
    keep = []
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if any(key == p.rstrip(".") or key.startswith(p) for p in prefixes):
            keep.append(o.lstrip("+"))
    return keep


# keys added with a default that changes what a run computes or scores (the network's function,
# the learner's passes, what its evaluations play): a checkpoint written before them was trained
# without what they add, and keeps that (other new keys take their defaults)
ADDED_KEYS_AS_TRAINED = {
    "model.center": False,
    # A3C on Pong takes two passes and averaged weights from 5862dd5 on (conf/algo_env/a3c_Pong)
    "algo.epochs": 1,
    "eval.average_frames": 0,
    "eval.sticky_actions": None,
    "eval.select_sticky_actions": None,
}


def _with_new_defaults(saved: DictConfig) -> DictConfig:
    """A checkpoint's config with the keys added to the schema since it was written (at their
    defaults, composed for the run's algo and env, or as ADDED_KEYS_AS_TRAINED says), so that
    older runs still resume and load, and compute what they computed."""
    try:
        base = compose_config([f"algo={saved.algo.name}", f"env={saved.env.name}"], check=False)
    except Exception:  # an algo or env this version no longer has: the checks that follow say so
        return saved
    OmegaConf.set_struct(base, False)
    merged = OmegaConf.merge(base, saved)
    for key, value in ADDED_KEYS_AS_TRAINED.items():
        # only where this algo and env have a default for it (DDPG has no algo.epochs)
        if OmegaConf.select(base, key) is not None and OmegaConf.select(saved, key) is None:
            OmegaConf.update(merged, key, value, merge=False)
    return merged


GROUPS = ("algo", "env")


def config_from_checkpoint(
    payload: dict, cli_cfg: DictConfig, overrides: list[str], what: str
) -> DictConfig:
    """The checkpoint's own config, with the command line's explicit `env.*`, `model.*`... keys
    on top (e.g. `env.sticky_actions=0.25` to evaluate under other settings). `resume` keeps the
    run's own evaluation, logging and checkpoint settings unless the command line names them;
    `load` (eval / watch) takes those from the command line, except the run's own
    RUN_OWN_EVAL_KEYS (what its evaluations scored) where the command line does not name them."""
    cfg = _with_new_defaults(OmegaConf.create(payload["config"]))
    chosen = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in overrides if "=" in o}
    if "algo" in chosen and chosen["algo"] != cfg.algo.name:
        raise ConfigError(
            f"{what}: the checkpoint was trained with algo={cfg.algo.name}, not algo={chosen['algo']}"
        )
    if "env" in chosen and chosen["env"] != cfg.env.name:
        raise ConfigError(
            f"{what}: the checkpoint was trained on env={cfg.env.name}, not env={chosen['env']}"
        )
    prefixes = ("env.", "algo.", "model.") if what == "resume" else ("env.",)
    # algo=NAME / env=NAME choose a config group (checked against the checkpoint's just above)
    dotlist = [o for o in _explicit(overrides, prefixes) if o.split("=", 1)[0] not in GROUPS]
    if dotlist:
        if what == "resume":
            _refuse_structural_changes(cfg, cli_cfg, dotlist)
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(dotlist))
        except OmegaConfBaseException as e:
            raise ConfigError(f"{what}: {str(e).splitlines()[0]}") from None
    run_keys = ("device", "eval", "video", "logger", "checkpoint", "torch_threads")
    with open_dict(cfg):
        for key in ("mode", "load", "resume"):
            cfg[key] = cli_cfg[key]
        if what == "resume":
            # the run goes on as it was configured; only what this command line names changes
            names = tuple(f"{k}." for k in (*run_keys, "total_frames", "seed"))
            for o in _explicit(overrides, names):
                key = o.split("=", 1)[0].lstrip("~")
                OmegaConf.update(cfg, key, OmegaConf.select(cli_cfg, key), merge=False)
            # a run trained online goes online again only when this command line says so
            cfg.logger.wandb.mode = cli_cfg.logger.wandb.mode
        else:  # eval / watch: run-level settings come from this command line
            own = {key: cfg.eval.get(key) for key in RUN_OWN_EVAL_KEYS}
            for key in run_keys:
                cfg[key] = cli_cfg[key]
            # ... except what the run's evaluations measured: a bare `mode=eval load=<run>` composes
            # the default pairing's (a3c_Pong: scored at sticky 0.0), which is not the run's
            named = {o.split("=", 1)[0].lstrip("~") for o in _explicit(overrides, ("eval.",))}
            for key, value in own.items():
                if f"eval.{key}" not in named:
                    cfg.eval[key] = value
    return cfg


# eval keys that say what a run's evaluations measure: `load=` keeps the run's own unless the
# command line names them (the sticky actions scored, the averaged policy of a training run, the
# setting that chose its select.pt)
RUN_OWN_EVAL_KEYS = ("sticky_actions", "average_frames", "select_sticky_actions")


# keys that shape the networks or the optimizer's statistics: a resume cannot change them (the
# algorithm modules add their own in RESUME_FIXED)
RESUME_FIXED = (
    "model.",
    "algo.optimizer",
    "env.kind",
    "env.id",
    "env.game",
    "env.task",
    "env.preprocess",
    "env.resolution",
    "env.frame_stack",
    "env.grayscale",
    "env.action_set",
    "env.full_action_space",
    "env.rows",
    "env.cols",
    "env.scale",
)


def _refuse_structural_changes(saved: DictConfig, cli_cfg: DictConfig, dotlist: list[str]) -> None:
    fixed = RESUME_FIXED + tuple(getattr(algos.get(saved.algo.name), "RESUME_FIXED", ()))
    for item in dotlist:
        key = item.split("=", 1)[0].lstrip("~")
        if not any(key == f or (f.endswith(".") and key.startswith(f)) for f in fixed):
            continue
        old, new = OmegaConf.select(saved, key), OmegaConf.select(cli_cfg, key)
        if old != new:
            raise ConfigError(
                f"resume: {key}={new!r} differs from the checkpoint's {old!r}; it shapes the "
                "networks or the optimizer's statistics, so it cannot change in a resumed run "
                "(start a new run to change it)"
            )


def _set_threads(cfg: DictConfig) -> None:
    if cfg.torch_threads:
        torch.set_num_threads(int(cfg.torch_threads))
    # Denormal floats are computed in microcode on x86: once a policy grows confident, its tiny
    # probabilities fill the backward pass with them (A3C updates 15-20 % slower late in Pong)
    torch.set_flush_denormal(True)
    keep_freed_memory()  # no page faults on each update's activations (device.py)
    if hasattr(signal, "SIGXFSZ"):  # a file size limit fails the write (kept run) instead of
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # killing the process


def _resume_dir(ckpt: Path, hydra_dir: Path) -> tuple[Path, str]:
    """Where a resumed run writes: the checkpoint's own run dir when it is in one
    (<run>/checkpoints/*.pt), else this command's new run dir."""
    run = ckpt.parent.parent
    if ckpt.parent.name == "checkpoints" and (
        (run / "metrics.jsonl").is_file() or (run / ".hydra").is_dir()
    ):
        if hydra_dir.resolve() != run.resolve():
            _adopt_hydra_record(hydra_dir, run)
        return run, "the checkpoint's own run dir"
    return hydra_dir, "a new run dir (the checkpoint is not inside a run dir)"


def _adopt_hydra_record(hydra_dir: Path, run: Path) -> None:
    """This command's .hydra/overrides.yaml joins the resumed run's .hydra (as
    resume-<time>-overrides.yaml); the new dir Hydra made for it is removed if it holds nothing
    else, so no stray .hydra-only dir is left behind."""
    import shutil
    import time

    record = hydra_dir / ".hydra" / "overrides.yaml"
    if record.is_file() and (run / ".hydra").is_dir():
        stamp = time.strftime("%Y%m%d-%H%M%S")
        shutil.copyfile(record, run / ".hydra" / f"resume-{stamp}-overrides.yaml")
    if hydra_dir.is_dir() and {p.name for p in hydra_dir.iterdir()} <= {".hydra"}:
        shutil.rmtree(hydra_dir, ignore_errors=True)


@dataclass
class JobResult:
    """How a job ended: its exit status, and the score a sweep compares (the mean return of its
    last evaluation: the final one, or the one that reached eval.target_return; NaN: none)."""

    code: int
    score: float


def train(cfg: DictConfig, run_dir: Path, overrides: list[str], group, job_name) -> JobResult:
    resume = None
    where = "a new run dir"
    if cfg.resume:
        resume = checkpoint.load(cfg.resume, key="resume")
        cfg = config_from_checkpoint(resume, cfg, overrides, "resume")
        check_config(cfg)
        run_dir, where = _resume_dir(checkpoint.resolve(cfg.resume, "resume"), run_dir)
        if resume["frames"] >= cfg.total_frames:
            print(
                f"resume: the checkpoint is already at {resume['frames']:,} frames >= total_frames="
                f"{cfg.total_frames:,}; raise total_frames to train further",
                file=sys.stderr,
            )
            return JobResult(0, float(resume.get("best_eval") or math.nan))
        solved, past = solve_from_checkpoint(resume, cfg), cfg.eval.frames_past_target
        if past_solve(solved, resume["frames"], cfg):
            print(
                f"resume: the run reached eval.target_return={cfg.eval.target_return:g} at "
                f"{solved['frames']:,} frames (eval.frames_past_target={past:,}) and "
                f"stopped at {resume['frames']:,}; raise eval.frames_past_target, or set "
                "eval.target_return=null, to train further",
                file=sys.stderr,
            )
            return JobResult(0, float(resume.get("best_eval") or math.nan))
    with RunLock(run_dir):
        if not resume:
            _refuse_used_dir(run_dir)
        return _train_locked(cfg, run_dir, resume, where, group, job_name)


def _refuse_used_dir(run_dir: Path) -> None:
    used = [n for n in ("metrics.jsonl", "checkpoints") if (run_dir / n).exists()]
    if used:
        raise ConfigError(
            f"run dir {run_dir} already holds a run ({', '.join(used)}); continue it with "
            f"resume={run_dir}, or train into another hydra.run.dir"
        )


def _train_locked(cfg, run_dir: Path, resume, where: str, group, job_name) -> JobResult:
    device = resolve_device(cfg.device)
    _set_threads(cfg)
    seed_everything(cfg.seed)
    if resume:
        checkpoint.set_rng_state(resume["rng"])
    algo = algos.get(cfg.algo.name)
    run = Run(
        cfg,
        run_dir,
        device,
        resume,
        group=group,
        job_name=job_name,
        policy_factory=functools.partial(algo.make_policy, cfg),
    )
    start = f"resuming at {resume['frames']:,} frames" if resume else "training"
    run.tracker.message(
        f"pixelrl: {start} {cfg.algo.name} on {cfg.env.name} for {cfg.total_frames:,} frames | "
        f"device {describe(device)} | run dir {run_dir} ({where})"
    )
    if cfg.algo.get("precision") == "bf16" and device.type == "cpu" and not cpu_multiplies_bf16():
        run.tracker.message(
            "algo.precision=bf16: this CPU has neither AMX nor AVX512-BF16, so bf16 is emulated, "
            "slower than fp32 (precision=auto takes fp32 here); on a busy machine its threads "
            "spin (DDPG: 13x the time), torch_threads=1 avoids that"
        )
    if run.tracker.replayed_rows:
        run.tracker.message(
            f"metrics.jsonl: {run.tracker.replayed_rows} rows logged after the checkpoint were "
            "removed (those frames are played again)"
        )
    if resume:
        run.tracker.log(resume["frames"], {"charts/resumed": 1})
    record_session(run_dir, device, resume["frames"] if resume else 0)
    run.stop.install()
    try:
        algo.train(run)
    except Exception as e:
        path = run.save_after_fault(e)  # what the learner has is kept, whatever went wrong
        if run.stop:  # a process that went down with the stop signal: that is the stop itself
            run.tracker.message(f"checkpoint: {path} (stopping; {e})")
        elif isinstance(e, TrainingError):
            kept = f"; checkpoint written after the fault: {path}" if path else ""
            raise TrainingError(f"{e}{kept}") from None
        else:
            if path:
                run.tracker.message(f"checkpoint written after the fault: {path}")
            raise
    finally:
        run.stop.uninstall()
        run.close()
    if run.stop:
        print(f"interrupted: checkpoint saved to {run.checkpoint_path}", file=sys.stderr)
    last = run.tracker.last_eval
    return JobResult(run.stop.exit_code, math.nan if last is None else float(last))


def record_session(run_dir: Path, device: torch.device, frames: int) -> None:
    """Append this process's command, machine and commit to <run>/run_info.json (a resumed run
    adds a session), so a result can always be traced to where and how it was made."""
    import datetime
    import os

    from pixelrl.machine import machine_info

    path = run_dir / "run_info.json"
    try:
        sessions = json.loads(path.read_text())["sessions"] if path.is_file() else []
    except (ValueError, KeyError, TypeError):
        sessions = []
    sessions.append(
        {
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(["python -m pixelrl", *sys.argv[1:]]),
            "start_frames": int(frames),
            **machine_info(str(device)),
        }
    )
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps({"sessions": sessions}, indent=1))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk costs this record, not the run


class RunLock:
    """An exclusive lock on a run dir (`<run>/.lock`, fcntl) held while a process trains in it,
    so that a second run or a second resume of the same run is refused instead of interleaving
    metrics.jsonl and overwriting last.pt."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        import fcntl
        import os

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"run dir {self.path.parent} is in use by another pixelrl process (pid {holder}); "
                "wait for it to end, or train into another hydra.run.dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        import os

        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock (so does the process's death)
            self._fd = None


class Agent:
    """A trained policy: `act(obs)` -> greedy actions for a batch of env observations."""

    def __init__(self, policy: torch.nn.Module, cfg: DictConfig, device: torch.device):
        self.policy = policy.eval()
        self.config = cfg
        self.device = device

    def act(self, obs) -> np.ndarray:
        with torch.no_grad():
            obs_t = torch.as_tensor(np.asarray(obs), device=self.device)
            return self.policy.act(obs_t, greedy=True).cpu().numpy()


def build_agent(payload: dict, cfg: DictConfig, device: torch.device) -> Agent:
    algo = algos.get(cfg.algo.name)
    obs_space, act_space = checkpoint.spaces_from_payload(payload)
    policy = algo.make_policy(cfg, obs_space, act_space)
    try:
        policy.load_state_dict(payload["models"]["policy"])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(
            f"checkpoint weights do not fit the network: {str(e).splitlines()[0][:160]}"
        ) from None
    return Agent(policy.to(device), cfg, device)


def load_agent(path: str, device: str = "cpu") -> Agent:
    """Python API: the greedy agent saved in a checkpoint (a .pt file or a run dir)."""
    payload = checkpoint.load(path)
    cfg = _with_new_defaults(OmegaConf.create(payload["config"]))
    return build_agent(payload, cfg, resolve_device(device))


def evaluate_checkpoint(
    cfg: DictConfig, run_dir: Path, overrides: list[str], watch: bool
) -> JobResult:
    from pixelrl.evaluate import Evaluator, stalled_note

    payload = checkpoint.load(cfg.load)
    cfg = config_from_checkpoint(payload, cfg, overrides, "load")
    check_config(cfg)
    device = resolve_device(cfg.device)
    _set_threads(cfg)
    seed_everything(cfg.seed)
    agent = build_agent(payload, cfg, device)
    evaluator = Evaluator(cfg, run_dir)
    try:
        stalled, starts = 0, None
        if watch:
            returns, lengths = [], []
            for i in range(cfg.eval.episodes):
                path, ret, length = evaluator.watch(agent.act, f"watch_{i:03d}", seed_offset=i)
                returns.append(ret)
                lengths.append(length)
                print(path.resolve() if path else "(no frames recorded)", flush=True)
        else:
            returns, lengths, stalled, starts = evaluator.evaluate(agent.act)
    finally:
        evaluator.close()
    result = {**summarize_returns(returns), "stalled": stalled}
    if stalled:
        print(
            f"eval: {len(returns)} episodes"
            + stalled_note(stalled, cfg.eval.max_steps_without_reward),
            file=sys.stderr,
            flush=True,
        )
    with open(run_dir / "eval.json", "w") as f:
        json.dump(
            {
                **result,
                "returns": returns,
                "lengths": lengths,
                **({"noop_starts": starts} if starts is not None else {}),
                "checkpoint": str(cfg.load),
            },
            f,
            indent=1,
        )
    print(json.dumps(result), flush=True)
    return JobResult(0, result["return_mean"])


def run_job(cfg: DictConfig) -> JobResult:
    if cfg.mode == "train" and cfg.resume or cfg.mode != "train" and cfg.load:
        validate_entry(cfg)  # the rest is checked once the checkpoint's own config is merged
    else:
        check_config(cfg)
    run_dir, overrides, group, job_name = _hydra_context()
    if cfg.mode == "train":
        return train(cfg, run_dir, overrides, group, job_name)
    return evaluate_checkpoint(cfg, run_dir, overrides, watch=cfg.mode == "watch")
