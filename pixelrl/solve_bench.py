"""Time-to-solve benchmarks over seeds: `python -m pixelrl.bench which=pong_solve seeds=1,2,3,4,5`.

For each seed, one after the other:
  1. the raw env's speed (the training env's settings, random actions) for `raw_seconds`;
  2. the real training command with `eval.target_return`, capped at `minutes` (then stopped with
     Ctrl-C), or with `cost` at the time that solve cost takes at the raw env's speed just
     measured, if that comes first (a cap that means the same on a slow host): it stops itself
     at the first greedy evaluation (eval.episodes >= 10 games) whose mean return reaches the
     target; evaluations wait until the training return is no longer hopeless
     (eval.min_train_return), and one that can no longer reach the target stops early
     (eval.max_return, set by env=Pong), so they cost the run little;
  3. the raw env's speed again, right after the training: a shared host's speed drifts over a
     half-hour run (one 30-s measurement swung 12.7k-21.4k frames/s within a session), and the
     mean of one before and one after brackets the run;
  4. the solving policy evaluated again with sticky actions 0.25 (Atari) over 30 games, a
     robustness check, and (Pong) at sticky 0 on each of the 30 no-op starts once
     (eval.noop_sweep): a greedy game there is fixed by its start, so that is the solve's exact
     score, where its 10 games drew from those starts;
     with args="eval.frames_past_target=N" the run trains on N frames past its solve, and the
     final policy is scored too (its own evaluation at sticky 0, and at 0.25): the one it ends
     with (average.pt under eval.average_frames, else last.pt), and select.pt where the run
     chose one by its evaluations past the solve (eval.select_sticky_actions; 10 games each, on
     games other than these 30).
Per seed it reports minutes and frames to the solve (the evaluated policy's own clock, as
`eval/target_minutes` measures it), training frames/s, and the machine-independent **solve cost**
= seconds to solve x the raw env's frames/s (the mean of the two measurements): frames to solve /
(training frames/s / raw frames/s).
Then the median, the worst and the number solved. Each seed's run dir is kept, so that
`python -m pixelrl.plot <out dir> group=run y=eval/return_mean x=minutes` draws its curves.
"""

from __future__ import annotations

import json
import math
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class SolveBench:
    name: str
    what: str
    args: list[str]  # the training command's overrides (the product's default command)
    raw_args: list[str]  # what defines the raw env
    raw_envs: int  # envs stepped in the raw-env measurement
    target: float
    min_train_return: float | None
    every_frames: int
    robustness: list[str]  # overrides of the extra evaluation after the solve ([]: none)
    eval_args: tuple[str, ...] = ()  # what the solve's evaluations are held to
    # overrides of an exact evaluation of the solving policy, one game per no-op start
    # (eval.noop_sweep; ROBUSTNESS_EPISODES games = env.noop_max) (): none
    exact: tuple[str, ...] = ()


SOLVES = {
    "pong_solve": SolveBench(
        "pong_solve",
        "Pong with the default command (A3C), or what args= names (algo=, experiment=), to a "
        "greedy eval >= 18 (10 games, sticky actions 0)",
        ["algo=a3c", "env=Pong"],
        ["env=Pong"],
        16,
        target=18.0,
        # greedy play is far ahead of the sampled training games (seed 3 at its 40-min cap: 20.6
        # greedy against +3 to +12 in training; seed 5 under a constant lr: 20.8 at its first
        # evaluation, the training games at -5 just before), and a failed try gives up within a
        # few points conceded per game
        min_train_return=-10.0,
        every_frames=1_000_000,
        robustness=["eval.sticky_actions=0.25"],
        # the solve is scored at sticky actions 0 even when training uses env.sticky_actions
        eval_args=("eval.sticky_actions=0.0",),
        # at sticky 0 a greedy game is fixed by its no-op start (30 of them): the solve's 10 games
        # are a sample of those, whose mean this plays exactly (fp32 seed 5: 19.4 and 16.33)
        exact=("eval.sticky_actions=0.0", "eval.noop_sweep=true"),
    ),
    # the same machinery on a toy that solves in seconds (its test)
    "catch_solve": SolveBench(
        "catch_solve",
        "A2C on Catch to a greedy eval >= 0.6 (tests the benchmark itself)",
        ["algo=actor_critic", "env=Catch"],
        ["env=Catch"],
        16,
        target=0.6,
        min_train_return=0.0,
        every_frames=10_000,
        robustness=[],
    ),
}
EVAL_EPISODES = 10
# the sticky-0.25 check: 10 games of one policy swing by 1-2 points from one try to the next
# (recorded side by side in BENCHMARKS.md); 30 games, 10 at a time
ROBUSTNESS_EPISODES = 30


def _cli(args: list[str], cwd: Path, timeout: float | None = None, cap_s: float | None = None):
    """Run `python -m pixelrl <args>`; after `cap_s` it gets a Ctrl-C (it then saves and ends).
    Returns (exit status, stdout, stderr, stopped): `stopped` when this benchmark was itself
    stopped meanwhile (Ctrl-C or SIGTERM); the command is then stopped too and its outputs kept."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pixelrl", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stopped = False
    try:
        out, err = proc.communicate(timeout=cap_s or timeout)
    except subprocess.TimeoutExpired:
        out, err = stop_command(proc, signal.SIGINT)
    except KeyboardInterrupt:
        # SIGTERM, not SIGINT: a Ctrl-C typed in a terminal has reached it already, and a second
        # SIGINT would abort it without its final checkpoint; a SIGTERM after it changes nothing
        stopped = True
        out, err = stop_command(proc, signal.SIGTERM)
    return proc.returncode, out, err, stopped


def stop_command(proc: subprocess.Popen, signum: int) -> tuple[str, str]:
    """Ask the command to stop (it saves and ends); kill it after 2 minutes or on a Ctrl-C."""
    proc.send_signal(signum)
    try:
        return proc.communicate(timeout=120)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        proc.kill()
        return proc.communicate()


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        if line.strip().startswith("{"):
            return json.loads(line)
    return None


def command_args(b: SolveBench, extra: list[str]) -> list[str]:
    """The training command's overrides: the benchmark's own, then args=. An experiment= in args=
    picks its own algo and env, which the benchmark's algo= and env= would override (Hydra puts
    command-line choices over an experiment's defaults): those two are left out then."""
    own = list(b.args)
    if any(a.startswith("experiment=") for a in extra):
        own = [a for a in own if not a.startswith(("algo=", "env="))]
    return [*own, *extra]


def run_seed(
    b: SolveBench,
    seed: int,
    minutes: float,
    raw_seconds: float,
    extra: list[str],
    out_dir: Path,
    cost: float | None = None,
) -> dict:
    """One seed: raw env, training to the solve (or the cap), raw env again, robustness checks.
    The cap is `minutes`, or with `cost` the time that solve cost takes at the raw env's speed
    measured just before (cost / raw frames/s), whichever comes first."""
    from pixelrl.raw_speed import raw_env_speed
    from pixelrl.tracking import read_metrics

    raw_args = [*b.raw_args, *extra_env(extra)]
    raw_before = raw_env_speed(raw_args, b.raw_envs, raw_seconds)["frames_per_s"]
    run_dir = out_dir / f"seed_{seed}"
    args = [
        *command_args(b, extra),
        f"seed={seed}",
        f"eval.target_return={b.target}",
        f"eval.every_frames={b.every_frames}",
        f"eval.episodes={EVAL_EPISODES}",
        f"eval.num_envs={EVAL_EPISODES}",  # the 10 games at once: one batched forward pass
        *b.eval_args,
        "video.enabled=false",
        "logger.wandb.mode=disabled",
        "logger.progress=false",
        "logger.fps_every_s=10",
        f"hydra.run.dir={run_dir}",
    ]
    if b.min_train_return is not None:
        args.append(f"eval.min_train_return={b.min_train_return}")
    cap_s = min(minutes * 60, cost / raw_before) if cost else minutes * 60
    started = time.monotonic()
    code, _, err, stopped = _cli(args, out_dir, cap_s=cap_s)
    wall_s = time.monotonic() - started
    if code not in (0, 130) and not stopped:
        raise RuntimeError(f"seed {seed}: training failed ({code}): {err.strip()[-400:]}")
    if stopped and not (run_dir / "metrics.jsonl").is_file():
        raise KeyboardInterrupt  # stopped before the run logged anything: no result to keep
    # the second measurement, unless the user stopped the benchmark (then as soon as possible);
    # a stop during it keeps what the training measured
    raw_after = None
    if not stopped:
        try:
            raw_after = raw_env_speed(raw_args, b.raw_envs, raw_seconds)["frames_per_s"]
        except KeyboardInterrupt:
            stopped = True
    raw_fps = raw_before if raw_after is None else (raw_before + raw_after) / 2
    rows = read_metrics(run_dir / "metrics.jsonl")
    solved_row = next((r for r in rows if "eval/target_minutes" in r), None)
    evals = [r for r in rows if r.get("eval/return_mean") is not None]
    last = rows[-1]
    means = {r["frames"]: r["eval/return_mean"] for r in evals}
    # the solving evaluation's own mean (eval.frames_past_target: later ones follow it)
    at_solve = means[solved_row["eval/target_frames"]] if solved_row else None
    fps = last["frames"] / max(1e-9, last["time_s"])
    result = {
        "seed": seed,
        "solved": solved_row is not None,
        "minutes": solved_row["eval/target_minutes"] if solved_row else None,
        "frames": solved_row["eval/target_frames"] if solved_row else None,
        "fps": fps,
        "raw_fps": raw_fps,
        "raw_fps_before": raw_before,
        "raw_fps_after": raw_after,
        "ratio": fps / raw_fps,
        "solve_cost": (solved_row["eval/target_minutes"] * 60 * raw_fps) if solved_row else None,
        "eval_sticky_0": at_solve,
        "evals": [(r["frames"], round(r["time_s"] / 60, 2), r["eval/return_mean"]) for r in evals],
        # evaluations that gave up (eval.max_return): the best mean they could still have reached
        # and the agent steps each of its env copies played first (a full one: a whole game each)
        "gave_up": [
            (
                r["frames"],
                round(r["time_s"] / 60, 2),
                round(r["eval/return_bound"], 2),
                r.get("eval/steps"),
            )
            for r in rows
            if "eval/return_bound" in r
        ],
        "trained_frames": last["frames"],
        "trained_minutes": last["time_s"] / 60,
        "wall_minutes": wall_s / 60,
        "cap_minutes": cap_s / 60,
        "run_dir": str(run_dir),
    }
    # trained on past the solve: the run kept its solving policy apart, as target.pt (a run that
    # stops at its solve logs a few frames past it too, from its workers' last rollouts)
    past = solved_row is not None and (run_dir / "checkpoints" / "target.pt").is_file()
    if past:  # trained on past the solve (eval.frames_past_target): the final policy too
        result["final_frames"] = last["frames"]
        # its own evaluation (none when the cap stopped the run)
        result["eval_sticky_0_final"] = means.get(last["frames"])
        # eval.select_sticky_actions: the evaluations past the solve that chose select.pt, and
        # the one chosen (the first best, as the run keeps it)
        key = "eval_select/return_mean"
        picks = [(r["frames"], r[key]) for r in rows if key in r]
        if picks:
            result["select_evals"] = picks
            result["select_frames"], result["select_eval"] = max(picks, key=lambda p: p[1])
    if stopped:
        result["stopped"] = True  # by the user, before its cap: a partial run
        return result
    if not (solved_row and (b.robustness or b.exact)):
        return result
    ckpts = run_dir / "checkpoints"
    # the solving policy: target.pt when the run trained on past it, else best.pt (the solve is
    # the best evaluation)
    solving = next((p for p in (ckpts / "target.pt", ckpts / "best.pt") if p.is_file()), run_dir)
    # the final policy: the one the run ends with, average.pt under eval.average_frames, else
    # last.pt; and select.pt where the run chose one (eval.select_sticky_actions). Seed 5 of the
    # default (BENCHMARKS.md): select.pt, picked by 10 games a policy, 14.6; average.pt 15.0
    final = next((ckpts / p for p in ("average.pt", "last.pt") if (ckpts / p).is_file()), None)
    checks = [("", solving)] if b.robustness else []
    if checks and past and final is not None:
        checks.append(("_final", final))
    if checks and past and (ckpts / "select.pt").is_file():
        checks.append(("_select", ckpts / "select.pt"))
    slug = "_".join(b.robustness).replace("=", "-")
    for suffix, load in checks:
        score, stopped = _evaluate(b.robustness, load, run_dir / f"eval{suffix}_{slug}", out_dir)
        if stopped:
            result["stopped"] = True  # the solve stands; its robustness check was not finished
            return result
        result[f"eval_sticky_025{suffix}"] = score["return_mean"]
        checked = {"overrides": b.robustness, "checkpoint": str(load)}
        result[f"robustness{suffix}"] = {**checked, **score}
    if b.exact:  # the solving policy once more, on every start: its exact score
        sweep_dir = run_dir / "eval_noop_sweep"
        score, stopped = _evaluate(list(b.exact), solving, sweep_dir, out_dir)
        if stopped:
            result["stopped"] = True
            return result
        games = json.loads((sweep_dir / "eval.json").read_text())
        result["eval_sticky_0_exact"] = score["return_mean"]
        result["exact"] = {
            "overrides": list(b.exact),
            "checkpoint": str(solving),
            # the return from each no-op start (a start plays one game at sticky 0)
            "by_start": {j: r for j, r in sorted(zip(games["noop_starts"], games["returns"]))},
        }
    return result


def _evaluate(
    overrides: list[str], load: Path, run_dir: Path, cwd: Path
) -> tuple[dict | None, bool]:
    """The policy in `load` evaluated under `overrides`, ROBUSTNESS_EPISODES games: (its scores,
    stopped by the user)."""
    code, out, err, stopped = _cli(
        [
            "mode=eval",
            f"load={load}",
            *overrides,
            f"eval.episodes={ROBUSTNESS_EPISODES}",
            f"eval.num_envs={EVAL_EPISODES}",
            "logger.wandb.mode=disabled",
            f"hydra.run.dir={run_dir}",
        ],
        cwd,
        timeout=3600,
    )
    score = _last_json(out) if code == 0 else None
    if score is None and not stopped:
        raise RuntimeError(
            f"{load}: evaluation ({' '.join(overrides)}) failed: {err.strip()[-400:]}"
        )
    return score, stopped


def extra_env(extra: list[str]) -> list[str]:
    """The extra overrides that change the env itself (they change the raw env too)."""
    return [o for o in extra if o.startswith("env.")]


def _finite(x: float) -> float | None:
    return None if math.isinf(x) else x


def summarize(results: list[dict]) -> dict:
    # a seed stopped by the user before its solve or its cap says nothing about either
    results = [r for r in results if r["solved"] or not r.get("stopped")]
    costs = [r["solve_cost"] if r["solved"] else math.inf for r in results]
    solved = [r for r in results if r["solved"]]
    out = {
        "seeds": len(results),
        "solved": len(solved),
        # null where an unsolved seed decides it (JSON has no infinity)
        "median_solve_cost": _finite(float(np.median(costs))) if results else None,
        "worst_solve_cost": _finite(max(costs)) if results else None,
        "median_ratio": float(np.median([r["ratio"] for r in results])) if results else None,
    }
    if solved:
        out["median_minutes"] = float(np.median([r["minutes"] for r in solved]))
        out["median_frames"] = float(np.median([r["frames"] for r in solved]))
    return out


def _m(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1e6:.1f}M"


def _cost(x: float | None) -> str:
    return "not solved" if x is None else _m(x)


def format_seed(r: dict) -> str:
    head = f"  seed {r['seed']}: "
    raw = f"{r['raw_fps']:,.0f}"
    if r.get("raw_fps_after") is not None:
        raw += f": {r['raw_fps_before']:,.0f} before, {r['raw_fps_after']:,.0f} after"
    rate = f"{r['fps']:,.0f} frames/s = {r['ratio']:.2f} x raw ({raw})"
    if not r["solved"]:
        what = "stopped, not solved," if r.get("stopped") else "not solved"
        return (
            head
            + f"{what} in {r['trained_minutes']:.1f} min ({_m(r['trained_frames'])} frames) | {rate}"
        )
    line = (
        head
        + f"solved at {r['minutes']:.1f} min, {_m(r['frames'])} frames (eval {r['eval_sticky_0']:.1f})"
        + f" | {rate} | solve cost {_m(r['solve_cost'])}"
    )
    if "eval_sticky_0_exact" in r:
        line += f" | every no-op start at 0.0: {r['eval_sticky_0_exact']:.2f}"
    if "eval_sticky_025" in r:
        line += f" | sticky 0.25: {r['eval_sticky_025']:.1f}"
    if "final_frames" in r:  # trained on past the solve (eval.frames_past_target)
        line += f" | final policy at {_m(r['final_frames'])}:"
        if r.get("eval_sticky_0_final") is not None:
            line += f" eval {r['eval_sticky_0_final']:.1f}"
        if "eval_sticky_025_final" in r:
            line += f" sticky 0.25: {r['eval_sticky_025_final']:.1f}"
        if "select_frames" in r:  # chosen by the run's evaluations (eval.select_sticky_actions)
            line += f" | select.pt from {_m(r['select_frames'])} (chose {r['select_eval']:.1f})"
            if "eval_sticky_025_select" in r:
                line += f" sticky 0.25: {r['eval_sticky_025_select']:.1f}"
    return line


def format_summary(name: str, s: dict) -> str:
    if not s["seeds"]:
        return f"{name}: no seed ran to its solve or its cap"
    line = (
        f"{name}: {s['solved']}/{s['seeds']} solved | solve cost median {_cost(s['median_solve_cost'])}, "
        f"worst {_cost(s['worst_solve_cost'])} | throughput median {s['median_ratio']:.2f} x raw"
    )
    if "median_minutes" in s:
        line += f" | median {s['median_minutes']:.1f} min, {_m(s['median_frames'])} frames"
    return line


def run(
    name: str,
    seeds: list[int],
    minutes: float,
    raw_seconds: float,
    extra: str,
    out_dir: Path,
    earlier: list[dict] | None = None,
    cost: float | None = None,
) -> dict:
    """Every seed in turn; `earlier` seeds' results (a previous call's JSON) are kept unless a
    seed is run again."""
    b = SOLVES[name]
    extra_args = shlex.split(extra)
    out_dir = Path(out_dir).resolve()  # the runs' cwd is out_dir: every path in it absolute
    out_dir.mkdir(parents=True, exist_ok=True)
    cap = f"{minutes:g} min" + (
        f" or a solve cost of {_m(cost)}, whichever is first," if cost else ""
    )
    print(f"{name}: {b.what}; cap {cap} per seed; runs in {out_dir}", flush=True)
    if extra_args:
        print(f"  extra overrides: {' '.join(extra_args)}", flush=True)
    results = [r for r in earlier or [] if r["seed"] not in seeds]
    stopped = False
    for i, seed in enumerate(seeds):
        try:
            r = run_seed(b, seed, minutes, raw_seconds, extra_args, out_dir, cost)
        except KeyboardInterrupt:  # before the seed's training logged anything: nothing to keep
            r = None
        if r is not None:
            results.append(r)
            print(format_seed(r), flush=True)
        if r is None or r.get("stopped"):
            left = seeds[i:] if r is None else seeds[i + 1 :]
            print(f"{name}: stopped; seeds not run: {', '.join(map(str, left)) or 'none'}")
            stopped = True
            break
    results.sort(key=lambda r: r["seed"])
    summary = summarize(results)
    print(format_summary(name, summary), flush=True)
    command = "python -m pixelrl " + " ".join(command_args(b, extra_args))
    return {
        "name": name,
        "what": b.what,
        "command": command,
        "target": b.target,
        "cap_minutes": minutes,
        "cap_cost": cost,
        "extra": extra_args,
        "seeds": results,
        "summary": summary,
        "stopped": stopped,
    }
