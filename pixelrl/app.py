"""One Hydra job: validate, seed, pick the device, then train, evaluate or watch.

Also the config's two entry points outside Hydra's app: `compose_config` (what the command line
would compose, for the Python API and the benchmarks) and `check_config` (every value check: the
schema's, the device's, the env family's and the algorithm's).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from pixelrl import algos, checkpoint, envs
from pixelrl.config import register_configs, validate
from pixelrl.device import check_spec, describe, keep_freed_memory, resolve_device
from pixelrl.errors import CheckpointError, ConfigError
from pixelrl.run import Run, seed_everything
from pixelrl.tracking import summarize_returns


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError (one line) for any value or combination that cannot run."""
    validate(cfg)
    check_spec(cfg.device)
    envs.check(cfg.env)
    algo = algos.get(cfg.algo.name)
    if hasattr(algo, "check"):
        algo.check(cfg)


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


def _with_new_defaults(saved: DictConfig) -> DictConfig:
    """A checkpoint's config with the keys added to the schema since it was written (at their
    defaults, composed for the run's algo and env), so that older runs still resume and load."""
    try:
        base = compose_config([f"algo={saved.algo.name}", f"env={saved.env.name}"], check=False)
    except Exception:  # an algo or env this version no longer has: the checks that follow say so
        return saved
    OmegaConf.set_struct(base, False)
    return OmegaConf.merge(base, saved)


def config_from_checkpoint(
    payload: dict, cli_cfg: DictConfig, overrides: list[str], what: str
) -> DictConfig:
    """The checkpoint's own config, with the command line's explicit `env.*`, `model.*`... keys
    on top (e.g. `env.sticky_actions=0.25` to evaluate under other settings). `resume` keeps the
    run's own evaluation, logging and checkpoint settings unless the command line names them;
    `load` (eval / watch) takes those from the command line."""
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
    dotlist = _explicit(overrides, prefixes)
    if dotlist:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(dotlist))
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
        else:  # eval / watch: run-level settings come from this command line
            for key in run_keys:
                cfg[key] = cli_cfg[key]
    return cfg


def _set_threads(cfg: DictConfig) -> None:
    if cfg.torch_threads:
        torch.set_num_threads(int(cfg.torch_threads))
    # Denormal floats are computed in microcode on x86: once a policy grows confident, its tiny
    # probabilities fill the backward pass with them (A3C updates 15-20 % slower late in Pong)
    torch.set_flush_denormal(True)
    keep_freed_memory()  # no page faults on each update's activations (device.py)


def train(cfg: DictConfig, run_dir: Path, overrides: list[str], group, job_name) -> int:
    resume = None
    if cfg.resume:
        resume = checkpoint.load(cfg.resume, key="resume")
        cfg = config_from_checkpoint(resume, cfg, overrides, "resume")
        check_config(cfg)
        run_dir = checkpoint.resolve(cfg.resume, "resume").parent.parent
        if resume["frames"] >= cfg.total_frames:
            print(
                f"resume: the checkpoint is already at {resume['frames']:,} frames >= total_frames="
                f"{cfg.total_frames:,}; raise total_frames to train further",
                file=sys.stderr,
            )
            return 0
    device = resolve_device(cfg.device)
    _set_threads(cfg)
    seed_everything(cfg.seed)
    if resume:
        checkpoint.set_rng_state(resume["rng"])
    algo = algos.get(cfg.algo.name)
    run = Run(cfg, run_dir, device, resume, group=group, job_name=job_name)
    start = f"resuming at {resume['frames']:,} frames" if resume else "training"
    run.tracker.message(
        f"pixelrl: {start} {cfg.algo.name} on {cfg.env.name} for {cfg.total_frames:,} frames | "
        f"device {describe(device)} | run dir {run_dir}"
    )
    if run.tracker.replayed_rows:
        run.tracker.message(
            f"metrics.jsonl: {run.tracker.replayed_rows} rows logged after the checkpoint were "
            "removed (those frames are played again)"
        )
    if resume:
        run.tracker.log(resume["frames"], {"charts/resumed": 1})
    run.stop.install()
    try:
        algo.train(run)
    finally:
        run.stop.uninstall()
        run.close()
    if run.stop:
        print(f"interrupted: checkpoint saved to {run.checkpoint_path}", file=sys.stderr)
    return run.stop.exit_code


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


def evaluate_checkpoint(cfg: DictConfig, run_dir: Path, overrides: list[str], watch: bool) -> int:
    from pixelrl.evaluate import Evaluator

    payload = checkpoint.load(cfg.load)
    cfg = config_from_checkpoint(payload, cfg, overrides, "load")
    check_config(cfg)
    device = resolve_device(cfg.device)
    _set_threads(cfg)
    seed_everything(cfg.seed)
    agent = build_agent(payload, cfg, device)
    evaluator = Evaluator(cfg, run_dir)
    try:
        if watch:
            returns, lengths = [], []
            for i in range(cfg.eval.episodes):
                path, ret, length = evaluator.watch(agent.act, f"watch_{i:03d}", seed_offset=i)
                returns.append(ret)
                lengths.append(length)
                print(path.resolve() if path else "(no frames recorded)", flush=True)
        else:
            returns, lengths = evaluator.evaluate(agent.act)
    finally:
        evaluator.close()
    result = summarize_returns(returns)
    with open(run_dir / "eval.json", "w") as f:
        json.dump(
            {**result, "returns": returns, "lengths": lengths, "checkpoint": str(cfg.load)},
            f,
            indent=1,
        )
    print(json.dumps(result), flush=True)
    return 0


def run_job(cfg: DictConfig) -> int:
    check_config(cfg)
    run_dir, overrides, group, job_name = _hydra_context()
    if cfg.mode == "train":
        return train(cfg, run_dir, overrides, group, job_name)
    return evaluate_checkpoint(cfg, run_dir, overrides, watch=cfg.mode == "watch")
