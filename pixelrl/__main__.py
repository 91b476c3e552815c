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

import math
import os
import sys


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
    from pixelrl.config import options

    for group, title in (
        ("algo", "algorithms (algo=)"),
        ("env", "environments (env=)"),
        ("experiment", "presets (experiment=)"),
    ):
        opts = options(group)
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
        "  total_frames=20000000       emulator frames to train (frame skip included; toy envs: less)",
        "  eval.every_frames=1000000   periodic greedy evaluation (0: off); eval.episodes=10",
        "  video.enabled=true          an mp4 of the agent at every evaluation",
        "  checkpoint.every_frames=... periodic checkpoints/last.pt (always one at the end)",
        "  checkpoint.keep=1           periodic checkpoints kept (N: also frames_<frames>.pt)",
        "  resume=PATH                 continue training from a checkpoint file or run dir",
        "  load=PATH                   checkpoint for mode=eval | mode=watch",
        "  logger.wandb.mode=offline   offline (default) | online | disabled; .project .entity .group",
        "  algo.* env.* model.*        see conf/ and pixelrl/config.py, or add --cfg job to print all",
        "  conf/algo_env/ALGO_ENV.yaml one pairing's own settings (a3c_Pong: env.sticky_actions=0.25",
        "                              eval.sticky_actions=0.0 algo.n_steps=10 algo.epochs=2 ...)",
        "",
        "outputs: runs/<date>/<time>_<algo>_<env>_s<seed>/ with metrics.jsonl, checkpoints/",
        "         (last.pt, best.pt), videos/*.mp4, tb/, wandb/ and .hydra/",
        "         (sweeps: multirun/<date>/<time>/<job>/)",
        "",
        "Hydra's own options: python -m pixelrl --hydra-help",
    ]
    return "\n".join(lines)


def _fail(message: str, code: int) -> None:
    print(f"pixelrl: error: {message}", file=sys.stderr)
    sys.exit(code)


def _task(cfg) -> float:
    """The Hydra task; returns the job's score for sweepers (Optuna): the mean return of its last
    evaluation. Errors end a single run from here, as one line, so that Hydra does not add its
    own 'Error executing job' block. In a sweep a failed job is one line too, and its score is
    NaN (a failed trial for Optuna) so that the other jobs still run; a stop signal stops the
    whole sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from pixelrl.app import run_job
    from pixelrl.errors import PixelrlError

    sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        result = run_job(cfg)
    except PixelrlError as e:
        if not sweep:
            _fail(str(e), e.exit_code)
        job = HydraConfig.get().job
        print(f"pixelrl: error: job {job.num} ({job.override_dirname}): {e}", file=sys.stderr)
        return math.nan
    if result.code:
        sys.exit(result.code)
    return result.score


def main() -> None:
    argv = sys.argv[1:]
    if any(a in ("-h", "--help") for a in argv):
        print(help_text())
        sys.exit(0)
    # Let errors reach us so they print as one line (Hydra would print its own block).
    os.environ["HYDRA_FULL_ERROR"] = "1"
    from pixelrl.machine import let_openmp_threads_sleep

    let_openmp_threads_sleep()
    import hydra

    from pixelrl.config import register_configs

    register_configs()
    entry = hydra.main(version_base="1.3", config_path="pkg://pixelrl.conf", config_name="config")(
        _task
    )
    try:
        entry()
    except KeyboardInterrupt:
        print("pixelrl: aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # composition errors come here as Hydra/OmegaConf exceptions
        from pixelrl.app import hydra_error_line

        line = hydra_error_line(e)
        if line is None:
            raise
        keys = {a.split("=", 1)[0] for a in argv}
        if line.startswith("unknown config key 'algo.") and keys & {"resume", "load"}:
            if "algo" not in keys:  # the command line was composed with the default algo
                line += "; with resume= or load=, name the run's algorithm too (algo=NAME)"
        _fail(line, 2)


if __name__ == "__main__":
    main()
