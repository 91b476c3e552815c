"""pixelrl: train agents from pixels.

Usage:
    python -m pixelrl [mode=train|eval|watch] algo=<name> env=<name> [key=value ...]
    python -m pixelrl algo=a3c env=Pong                           # train A3C on Pong (the default)
    python -m pixelrl algo=actor_critic env=Catch total_frames=50000
    python -m pixelrl mode=eval load=runs/<date>/<time>_a3c_Pong      # greedy score, one JSON line
    python -m pixelrl mode=watch load=runs/<...>/checkpoints/last.pt  # mp4s of the agent
    python -m pixelrl -m algo.lr=1e-4,3e-4 seed=1,2                # Hydra multirun sweep
    python -m pixelrl --help                                       # options
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


def _conf_dir() -> Path:
    import importlib.resources

    try:
        return Path(str(importlib.resources.files("pixelrl.conf")))
    except ModuleNotFoundError:
        return CONF_DIR


def _options(group: str) -> list[tuple[str, str]]:
    """(option, first comment line) for every yaml of a config group."""
    out = []
    for path in sorted((_conf_dir() / group).glob("*.yaml"), key=lambda p: p.stem.lower()):
        desc = ""
        for line in path.read_text().splitlines():
            if line.startswith("#") and not line.startswith("# @package"):
                desc = line.lstrip("# ").strip()
                break
        out.append((path.stem, desc))
    return out


def help_text() -> str:
    lines = [
        "pixelrl: reinforcement learning from pixels (REINFORCE, Actor-Critic/A2C, A3C, DDPG)",
        "",
        "usage: python -m pixelrl [mode=train|eval|watch] [algo=NAME] [env=NAME] [key=value ...]",
        "       python -m pixelrl -m key=a,b ...          (Hydra multirun sweep)",
        "",
        "defaults: mode=train algo=a3c env=Pong",
        "",
    ]
    for group, title in (
        ("algo", "algorithms (algo=)"),
        ("env", "environments (env=)"),
        ("experiment", "presets (experiment=)"),
    ):
        opts = _options(group)
        if not opts:
            continue
        lines.append(title + ":")
        width = max(len(name) for name, _ in opts)
        lines += [f"  {name:<{width}}  {desc}" for name, desc in opts]
        lines.append("")
    lines += [
        "common keys:",
        "  seed=1                      seeds python, numpy, torch and every env (seed + index)",
        "  device=auto                 auto | cpu | cuda | cuda:N | mps",
        "  total_frames=10000000       emulator frames to train for (frame skip included)",
        "  eval.every_frames=1000000   periodic greedy evaluation (0: off); eval.episodes=10",
        "  video.enabled=true          an mp4 of the agent at every evaluation",
        "  checkpoint.every_frames=... periodic checkpoints/last.pt (always one at the end)",
        "  resume=PATH                 continue training from a checkpoint file or run dir",
        "  load=PATH                   checkpoint for mode=eval | mode=watch",
        "  logger.wandb.mode=offline   offline (default) | online | disabled; .project .entity .group",
        "  algo.* env.* model.*        see conf/ and pixelrl/config.py, or add --cfg job to print all",
        "",
        "outputs: runs/<date>/<time>_<algo>_<env>/ with metrics.jsonl, checkpoints/last.pt,",
        "         videos/*.mp4, wandb/ and .hydra/ (sweeps: multirun/<date>/<time>/<job>/)",
        "",
        "Hydra's own options: python -m pixelrl --hydra-help",
    ]
    return "\n".join(lines)


def _first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def hydra_error_line(exc: BaseException) -> str | None:
    """A one-line message for Hydra/OmegaConf composition errors (None: not one of those)."""
    from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    msg = str(exc)
    if isinstance(exc, MissingConfigException):
        m = re.search(r"Could not find '([^']+)/([^'/]+)'", msg)
        if m:
            group, option = m.groups()
            valid = [name for name, _ in _options(group)] or list(
                getattr(exc, "options", None) or []
            )
            return f"unknown {group} {option!r}; choose one of: {', '.join(valid)}"
        return _first_line(msg)
    cause = exc.__cause__
    if isinstance(exc, ConfigCompositionException) and isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None) or ""
        m = re.search(r"Value '(.*)' of type '(\w+)' could not be converted to (\w+)", str(cause))
        if m:
            value, _, target = m.groups()
            kind = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}.get(
                target, target
            )
            return f"{key}={value!r} is not valid: expected {kind}"
        if re.search(r"Key '[^']+' not in '", str(cause)) or "is not in struct" in str(cause):
            return f"unknown config key {key!r} (python -m pixelrl --help lists the options)"
        m = re.search(r"Invalid value '(.*)', expected one of \[(.*)\]", str(cause))
        if m:
            return f"{key}={m.group(1)!r} is not allowed; choose one of: {m.group(2)}"
        return f"{key}: {_first_line(str(cause))}" if key else _first_line(str(cause))
    m = re.search(r"Could not override '([^']+)'", msg)
    if m:
        return f"unknown config key {m.group(1)!r} (python -m pixelrl --help lists the options)"
    m = re.search(r"Could not append to config\. An item is already at '([^']+)'", msg)
    if m:
        return f"{m.group(1)} already exists; drop the '+' to override it"
    if isinstance(exc, (HydraException, OmegaConfBaseException)):
        line = _first_line(msg)
        if cause is not None and _first_line(str(cause)):
            line = f"{line}: {_first_line(str(cause))}"
        return line
    return None


def _fail(message: str, code: int) -> None:
    print(f"pixelrl: error: {message}", file=sys.stderr)
    sys.exit(code)


def _task(cfg) -> None:
    """The Hydra task. Errors end the process from here, as one line, so that Hydra does not add
    its own 'Error executing job' block; an interrupted run stops the sweep too."""
    from pixelrl.app import run_job
    from pixelrl.checkpoint import CheckpointError
    from pixelrl.config import ConfigError
    from pixelrl.run import TrainingError

    try:
        code = run_job(cfg) or 0
    except (ConfigError, CheckpointError) as e:
        _fail(str(e), 2)
    except TrainingError as e:
        _fail(str(e), 1)
    if code:
        sys.exit(code)


def main() -> None:
    argv = sys.argv[1:]
    if any(a in ("-h", "--help") for a in argv):
        print(help_text())
        sys.exit(0)
    # Let errors reach us so they print as one line (Hydra would print its own block).
    os.environ["HYDRA_FULL_ERROR"] = "1"
    import hydra

    from pixelrl.checkpoint import CheckpointError
    from pixelrl.config import ConfigError, register_configs
    from pixelrl.run import TrainingError

    register_configs()
    entry = hydra.main(version_base="1.3", config_path="pkg://pixelrl.conf", config_name="config")(
        _task
    )
    try:
        entry()
    except (ConfigError, CheckpointError) as e:
        print(f"pixelrl: error: {e}", file=sys.stderr)
        sys.exit(2)
    except TrainingError as e:
        print(f"pixelrl: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("pixelrl: aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # composition errors come here as Hydra/OmegaConf exceptions
        line = hydra_error_line(e)
        if line is None:
            raise
        _fail(line, 2)


if __name__ == "__main__":
    main()
