"""Throughput benchmarks: every algorithm next to its raw env, measured in the same run.

    python -m pixelrl.bench [which=a3c_pong,a2c_pong,...] [seconds=40] [device=cpu|cuda] [out=FILE.json]
                            [replay_frames=100000] [args="..."] [ab="..." rounds=2]

For each benchmark: first the *baseline*, the preprocessed env with the same settings, backend
and number of envs stepped with random actions; then the real training command
(`python -m pixelrl ...`) run for `seconds` and stopped with Ctrl-C, its speed read from the
`train/fps` lines of its metrics.jsonl after a warm-up. Figures are printed as ratios to the
baseline, because machines are shared and noisy and only same-run ratios compare across them.
Results are also written as JSON (default: bench_results/bench_<time>.json).
`args="model.trunk=nature ..."` adds overrides to every benchmark's command (those of `env.` to
its raw env too).

`ab="algo.num_envs=4 ..."` makes each benchmark an A/B of one change: `rounds` rounds, each the
raw env, then the command as it is (A) and with the `ab` overrides (B) back to back, in alternating
order; it prints B's frames/s as a ratio to A's in the same round, and their median.

`which=replay_memory` is DDPG's replay buffer instead: `replay_frames` frames of 3x84x84 (stack 3,
rebuilt at sample time) filled in a fresh process, its RSS growth and peak as ratios to the raw
frame bytes, and the time of one sample of 256 3-step transitions.

`which=pong_solve` is a time-to-solve benchmark over seeds instead (pixelrl/solve_bench.py):

    python -m pixelrl.bench which=pong_solve [seeds=1,2,3,4,5] [minutes=60] [cost=26000000]
                            [raw_seconds=30] [args="algo.n_steps=20 ..."] [device=cuda] [out=FILE.json]

The raw env is measured for `raw_seconds` before and again after each seed's training; the
solve cost uses their mean. `cost=` caps each seed's whole run (solve and any training past it) at
that solve cost too: cost / the raw frames/s measured just before it, if that is sooner than
`minutes` (`cost=26000000`, the worst solve cost our Pong goal allows: one cap for a fast and a
slow host). Each seed's run dir is kept beside the JSON; an `out=` file that already holds
results of the same benchmark keeps its other seeds (run seeds one call at a time, gather them in
one file). `device=cuda` (or a device= override in args=) trains there, and the
JSON's machine names the GPU. Ctrl-C or SIGTERM stops it: the seed's training command is stopped too
(it saves its checkpoint), the JSON keeps that seed as a partial run marked `stopped` (left out of
the summary), and it exits with 130.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixelrl import tool_args
from pixelrl.errors import ConfigError
from pixelrl.machine import let_openmp_threads_sleep, machine_info
from pixelrl.raw_speed import raw_env_speed, raw_env_speed_processes
from pixelrl.solve_bench import SOLVES, extra_env, stop_command


@dataclass
class Bench:
    name: str
    what: str
    args: list[str]  # the training command's overrides
    baseline_args: list[str] = field(default_factory=list)  # overrides that define the raw env
    baseline_envs: int = 16
    unit: str = "frames"  # what the headline counts: emulator frames or agent steps
    gpu: bool = True  # meaningful on device=cuda
    # vector: the configured vector env, stepped from this process; processes: baseline_envs
    # processes each stepping its own env, no messages at all (the ceiling for agents that play
    # inside the env processes, as REINFORCE's episode workers do)
    baseline: str = "vector"


MEMORY = "replay_memory"  # not a training run: DDPG's replay buffer against raw frame bytes
BENCHES = {
    "a3c_pong": Bench(
        "a3c_pong",
        "A3C, 2 workers x 8 envs, A3C-paper trunk (the default command: on Pong two passes per "
        "rollout, trained at sticky 0.25; args=algo.epochs=1 for one)",
        ["algo=a3c", "env=Pong"],
        ["env=Pong"],
        16,
        gpu=False,
    ),
    "a3c_pong_fp32": Bench(
        "a3c_pong_fp32",
        "a3c_pong with algo.precision=fp32 (what algo.precision=auto gains on bf16 hardware)",
        ["algo=a3c", "env=Pong", "algo.precision=fp32"],
        ["env=Pong"],
        16,
        gpu=False,
    ),
    "a3c_pong_bf16": Bench(
        "a3c_pong_bf16",
        "a3c_pong with algo.precision=bf16 (the bf16 trunk forced, where auto would not take it)",
        ["algo=a3c", "env=Pong", "algo.precision=bf16"],
        ["env=Pong"],
        16,
        gpu=False,
    ),
    "a3c_pong_nature": Bench(
        "a3c_pong_nature",
        "A3C, 2 workers x 8 envs, Nature CNN",
        ["algo=a3c", "env=Pong", "model.trunk=nature"],
        ["env=Pong"],
        16,
        gpu=False,
    ),
    "a3c_pong_sync": Bench(
        "a3c_pong_sync",
        "A3C, our opencv recipe in-process (env.backend=sync)",
        ["algo=a3c", "env=Pong", "env.backend=sync"],
        ["env=Pong", "env.backend=procs"],
        16,
        gpu=False,
    ),
    "a2c_pong_procs": Bench(
        "a2c_pong_procs",
        "A2C, our opencv recipe (env.backend=procs)",
        ["algo=actor_critic", "env=Pong", "env.backend=procs"],
        ["env=Pong", "env.backend=procs"],
        16,
    ),
    "a2c_pong": Bench(
        "a2c_pong",
        "A2C (actor_critic), 16 envs, its Pong preset (A3C trunk, 10-step returns)",
        ["algo=actor_critic", "env=Pong"],
        ["env=Pong"],
        16,
    ),
    "karpathy_pong": Bench(
        "karpathy_pong",
        "REINFORCE, pg-pong exactly, 10 envs",
        ["experiment=karpathy_pong"],
        ["experiment=karpathy_pong"],
        10,
        unit="steps",
        baseline="processes",
    ),
    # A short warm-up, so that the measured window is all learning (1 update per 2 env steps).
    "ddpg_pendulum": Bench(
        "ddpg_pendulum",
        "DDPG, pixel Pendulum, batch 256, 84x84",
        ["algo=ddpg", "env=Pendulum", "algo.warmup_frames=1000"],
        ["algo=ddpg", "env=Pendulum"],
        1,
    ),
    "ddpg_pendulum_fp32": Bench(
        "ddpg_pendulum_fp32",
        "ddpg_pendulum with algo.precision=fp32 (what algo.precision=auto gains on bf16 hardware)",
        ["algo=ddpg", "env=Pendulum", "algo.warmup_frames=1000", "algo.precision=fp32"],
        ["algo=ddpg", "env=Pendulum"],
        1,
    ),
    "ddpg_cartpole": Bench(
        "ddpg_cartpole",
        "DDPG, dmc cartpole_swingup, action repeat 8, batch 256, 84x84 (needs the dmc extra)",
        [
            "algo=ddpg",
            "env=dmc",
            "env.task=cartpole_swingup",
            "env.action_repeat=8",
            "algo.warmup_frames=1000",
        ],
        ["algo=ddpg", "env=dmc", "env.task=cartpole_swingup", "env.action_repeat=8"],
        1,
    ),
    "ddpg_cartpole_replay_cpu": Bench(
        "ddpg_cartpole_replay_cpu",
        "ddpg_cartpole with algo.replay_device=cpu (frames in RAM, each batch copied to the GPU; "
        "what the default gains on a GPU)",
        [
            "algo=ddpg",
            "env=dmc",
            "env.task=cartpole_swingup",
            "env.action_repeat=8",
            "algo.warmup_frames=1000",
            "algo.replay_device=cpu",
        ],
        ["algo=ddpg", "env=dmc", "env.task=cartpole_swingup", "env.action_repeat=8"],
        1,
    ),
    "catch": Bench(
        "catch",
        "A2C on Catch (tiny, for tests)",
        ["algo=actor_critic", "env=Catch"],
        ["env=Catch"],
        16,
    ),
}
NAME_WIDTH = max(map(len, [*BENCHES, MEMORY]))  # the printed table's first column
DEFAULT = [
    "a3c_pong",
    "a3c_pong_nature",
    "a3c_pong_sync",
    "a2c_pong",
    "a2c_pong_procs",
    "karpathy_pong",
    "ddpg_pendulum",
    MEMORY,
]


def training_speed(args: list[str], seconds: float, device: str, workdir: Path) -> dict:
    """Run the real CLI for `seconds` after its first metrics line, stop it with SIGINT."""
    run_dir = workdir / "run"
    cmd = [
        sys.executable,
        "-m",
        "pixelrl",
        *args,
        f"device={device}",
        "total_frames=100000000000",
        "eval.every_frames=0",
        "eval.final=false",
        "checkpoint.every_frames=0",
        "video.enabled=false",
        "logger.wandb.mode=disabled",
        "logger.progress=false",
        "logger.fps_every_s=2",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.Popen(
        cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    log = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 180
    try:
        while (
            time.monotonic() < deadline
            and proc.poll() is None
            and not (log.exists() and log.stat().st_size > 0)
        ):
            time.sleep(0.2)
        if proc.poll() is None:
            time.sleep(seconds)
        _, err = stop_command(proc, signal.SIGINT)
    except KeyboardInterrupt:  # the benchmark itself is stopped: so is its command
        stop_command(proc, signal.SIGTERM)
        raise
    if proc.returncode not in (0, 130):
        raise RuntimeError(f"{' '.join(cmd[2:])} failed ({proc.returncode}): {err.strip()[-400:]}")
    from pixelrl.tracking import read_metrics

    rows = read_metrics(log)
    fps_rows = [r for r in rows if "train/fps" in r][1:]  # the first window includes start-up
    if len(fps_rows) < 2:
        raise RuntimeError(
            f"{' '.join(args)}: too few train/fps lines in {seconds}s; use a larger seconds="
        )
    first, last = fps_rows[0], fps_rows[-1]
    frames_per_s = (last["frames"] - first["frames"]) / max(1e-9, last["time_s"] - first["time_s"])
    out = {"frames_per_s": frames_per_s, "measured_s": last["time_s"] - first["time_s"]}
    updates = [
        r
        for r in rows
        if "charts/updates" in r and first["time_s"] <= r["time_s"] <= last["time_s"]
    ]
    if len(updates) >= 2:
        out["updates_per_s"] = (updates[-1]["charts/updates"] - updates[0]["charts/updates"]) / max(
            1e-9, updates[-1]["time_s"] - updates[0]["time_s"]
        )
    workers = {}
    for r in rows:
        for k, v in r.items():
            if (
                k.startswith("charts/worker")
                and k.endswith("_fps")
                and r["time_s"] >= first["time_s"]
            ):
                workers.setdefault(k[len("charts/") : -len("_fps")], []).append(v)
    if workers:
        out["per_worker_frames_per_s"] = {k: float(np.mean(v)) for k, v in sorted(workers.items())}
    episodes = [r for r in rows if "train/episode_return" in r and r["time_s"] >= first["time_s"]]
    if episodes:
        out["episodes_per_hour"] = (
            len(episodes) / max(1e-9, last["time_s"] - first["time_s"]) * 3600
        )
    return out


def _raw(b: Bench, extra: list[str], seconds: float) -> dict:
    """b's raw env, with the env overrides among `extra`."""
    raw = raw_env_speed_processes if b.baseline == "processes" else raw_env_speed
    return raw([*b.baseline_args, *extra_env(extra)], b.baseline_envs, max(5.0, seconds / 3))


def _train(b: Bench, args: list[str], seconds: float, device: str, baseline: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"pixelrl-bench-{b.name}-") as tmp:
        train = training_speed(args, seconds, device, Path(tmp))
    train["steps_per_s"] = train["frames_per_s"] / baseline["frames_per_step"]
    return train


def run_bench(b: Bench, seconds: float, device: str, extra: list[str] = ()) -> dict:
    args = [*b.args, *extra]
    result: dict = {
        "name": b.name,
        "what": b.what,
        "command": "python -m pixelrl " + " ".join(args),
    }
    result["baseline"] = _raw(b, extra, seconds)
    result["train"] = _train(b, args, seconds, device, result["baseline"])
    result["ratio"] = result["train"]["frames_per_s"] / result["baseline"]["frames_per_s"]
    return result


def run_ab(
    b: Bench, change: list[str], rounds: int, seconds: float, device: str, extra: list[str] = ()
) -> dict:
    """b's command (A) against it with `change` (B), `rounds` times back to back; each round
    measures the raw env first (B's too where `change` changes the env), and the arms take turns
    going first, so that a machine slowing down or speeding up favours neither."""
    a_args = [*b.args, *extra]
    b_args = [*a_args, *change]
    result: dict = {
        "name": b.name,
        "what": b.what,
        "command": "python -m pixelrl " + " ".join(a_args),
        "ab": change,
        "rounds": [],
    }
    key = "steps_per_s" if b.unit == "steps" else "frames_per_s"
    for i in range(rounds):
        r: dict = {"baseline": _raw(b, extra, seconds)}
        if extra_env(change):
            r["baseline_b"] = _raw(b, [*extra, *change], seconds)
        for arm in ("a", "b") if i % 2 == 0 else ("b", "a"):
            raw = r.get("baseline_b", r["baseline"]) if arm == "b" else r["baseline"]
            r[arm] = _train(b, a_args if arm == "a" else b_args, seconds, device, raw)
        r["b_over_a"] = r["b"][key] / r["a"][key]
        result["rounds"].append(r)
        print(format_round(b, r, i, rounds), flush=True)
    result["b_over_a"] = float(np.median([r["b_over_a"] for r in result["rounds"]]))
    return result


def _replay_memory_child(capacity: int) -> None:
    """Run in a fresh process: fill a replay buffer like DDPG on dmc cartpole (125-step
    episodes, 3x84x84 frames, stack 3) and print its memory figures as one JSON line."""
    import resource

    import psutil

    proc = psutil.Process()
    from pixelrl.buffers import ReplayBuffer  # imports torch, as training does

    rss_imports = proc.memory_info().rss
    buffer = ReplayBuffer(capacity, (9, 84, 84), 3, 1)
    pool = np.random.default_rng(0).integers(0, 256, (32, 1, 9, 84, 84), dtype=np.uint8)
    action = np.zeros((1, 1), np.float32)
    start, steps, episode = time.perf_counter(), 0, 125
    while steps < capacity:
        end = steps % episode == episode - 1
        buffer.add(pool[steps % 32], action, [0.0], pool[(steps + 1) % 32], [False], [end])
        steps += 1
    fill_s = time.perf_counter() - start
    rss_full = proc.memory_info().rss
    start = time.perf_counter()
    for _ in range(20):
        buffer.sample(256, 3, 0.99)
    sample_ms = (time.perf_counter() - start) / 20 * 1000
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    raw = capacity * 3 * 84 * 84
    print(
        json.dumps(
            {
                "frames": capacity,
                "transitions": len(buffer),
                "raw_frame_bytes": raw,
                "rss_after_imports": rss_imports,
                "rss_full": rss_full,
                "peak_rss": peak,
                "growth_ratio": (rss_full - rss_imports) / raw,
                "peak_ratio": (peak - rss_imports) / raw,
                "fill_s": fill_s,
                "sample_256_ms": sample_ms,
            }
        )
    )


def replay_memory(capacity: int) -> dict:
    code = f"from pixelrl.bench import _replay_memory_child; _replay_memory_child({capacity})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"replay buffer benchmark failed: {proc.stderr.strip()[-400:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["name"] = MEMORY
    return result


def format_memory(r: dict) -> str:
    gib = 2**30
    return (
        f"{MEMORY:<{NAME_WIDTH}} {r['frames']:,} frames 3x84x84: RSS growth {r['growth_ratio']:.3f} x raw "
        f"frame bytes ({r['raw_frame_bytes'] / gib:.2f} GiB), peak {r['peak_ratio']:.3f} x "
        f"(RSS after imports excluded) | sample(256, n=3) {r['sample_256_ms']:.1f} ms"
    )


def format_result(r: dict, unit: str) -> str:
    t, b = r["train"], r["baseline"]
    key = "steps_per_s" if unit == "steps" else "frames_per_s"
    how = f", {b['processes']} processes, own env each" if "processes" in b else ""
    line = f"{r['name']:<{NAME_WIDTH}} {t[key]:>9,.0f} {unit}/s = {r['ratio']:.2f} x raw env ({b[key]:,.0f} {unit}/s{how})"
    if "updates_per_s" in t:
        line += f" | {t['updates_per_s']:.1f} updates/s"
    if "per_worker_frames_per_s" in t:
        line += (
            " | per worker: "
            + " / ".join(f"{v:,.0f}" for v in t["per_worker_frames_per_s"].values())
            + " frames/s"
        )
    if "episodes_per_hour" in t and unit == "steps":
        line += f" | {t['episodes_per_hour']:,.0f} episodes/h"
    return line


def format_round(b: Bench, r: dict, i: int, rounds: int) -> str:
    key, unit = ("steps_per_s", "steps") if b.unit == "steps" else ("frames_per_s", "frames")
    raw = f"raw env {r['baseline'][key]:,.0f}"
    if "baseline_b" in r:
        raw += f" (B's {r['baseline_b'][key]:,.0f})"
    return (
        f"{b.name:<{NAME_WIDTH}} round {i + 1}/{rounds}: A {r['a'][key]:,.0f} | B {r['b'][key]:,.0f} "
        f"{unit}/s = {r['b_over_a']:.2f} x A | {raw} {unit}/s"
    )


def format_ab(r: dict) -> str:
    ratios = " / ".join(f"{x['b_over_a']:.2f}" for x in r["rounds"])
    return (
        f"{r['name']:<{NAME_WIDTH}} B ({' '.join(r['ab'])}) = {r['b_over_a']:.2f} x A "
        f"(median of {ratios})"
    )


def machine_line(info: dict) -> str:
    """The header every benchmark prints: what its figures were measured on."""
    gpu = f" ({info['gpu']})" if "gpu" in info else ""
    precision = f" | precision=auto: {info['auto_precision']}" if "auto_precision" in info else ""
    return (
        f"pixelrl.bench | {info['cpu']} | {info['cpus']} CPUs | torch {info['torch']} "
        f"({info['torch_threads']} threads) | device {info['device']}{gpu}{precision} "
        f"| commit {info.get('commit', '?')}"
    )


def solve_device(args: str, device: str) -> tuple[str, str]:
    """The time-to-solve runs' device: a device= override in args= wins over device=; a device=
    other than the default cpu joins the runs' overrides. Returns (args, device)."""
    named = [a.split("=", 1)[1] for a in shlex.split(args) if a.startswith("device=")]
    if named:
        return args, named[-1]
    return (f"{args} device={device}".strip() if device != "cpu" else args), device


def solve_main(name: str, opts: dict) -> int:
    """which=pong_solve: the time-to-solve benchmark over seeds (pixelrl/solve_bench.py)."""
    from pixelrl import solve_bench

    minutes = tool_args.number(opts, "minutes", float, 0, above=True)
    raw_seconds = tool_args.number(opts, "raw_seconds", float, 0, above=True)
    cost = tool_args.number(opts, "cost", float, 0, above=True) if opts["cost"] else None
    try:
        seeds = [int(s) for s in opts["seeds"].split(",") if s]
    except ValueError:
        seeds = []
    if not seeds or any(s < 0 for s in seeds):
        raise ConfigError(f"seeds={opts['seeds']!r} must list seeds >= 0")
    out = Path(opts["out"] or f"bench_results/{name}_{time.strftime('%Y%m%d-%H%M%S')}.json")
    earlier = None
    if out.is_file():
        try:
            old = json.loads(out.read_text())
        except json.JSONDecodeError:
            old = {}
        if old.get("name") != name:
            raise ConfigError(f"{out} holds other results; use another out=")
        earlier = old["seeds"]
    args, device = solve_device(opts["args"], opts["device"])
    info = machine_info(device)
    print(machine_line(info))
    try:
        result = solve_bench.run(
            name, seeds, minutes, raw_seconds, args, out.with_suffix(""), earlier, cost
        )
    except RuntimeError as e:
        print(f"pixelrl.bench: error: {e}", file=sys.stderr)
        return 1
    for r in result["seeds"]:
        if r["seed"] in seeds:  # this call's seeds: earlier ones keep their own machine
            r.update(commit=info.get("commit"), cpu=info["cpu"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": info, **result}, indent=1))
    print(f"results: {out}")
    return 130 if result["stopped"] else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    let_openmp_threads_sleep()  # as the commands it times do (python -m pixelrl)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        print("\nbenchmarks: " + ", ".join(f"{k} ({v.what})" for k, v in BENCHES.items()))
        print(f"and {MEMORY} (DDPG's replay buffer: RSS against raw frame bytes)")
        return 0
    defaults = {
        "which": ",".join(DEFAULT),
        "seconds": "40",
        "device": "cpu",
        "out": "",
        "replay_frames": "100000",
        "args": "",  # extra overrides for every benchmark's command
        "ab": "",  # a change to measure against the command as it is
        "rounds": "2",
        # time-to-solve benchmarks (which=pong_solve)
        "seeds": "1,2,3,4,5",
        "minutes": "60",
        "cost": "",  # a cap in solve cost (frames at the raw env's speed), besides minutes
        "raw_seconds": "30",
    }
    # SIGTERM stops a benchmark as Ctrl-C does: its running command is stopped too, and a
    # time-to-solve benchmark keeps what it measured so far
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        options, _ = tool_args.parse(argv, defaults)
        return _run(options)
    except ConfigError as e:
        print(f"pixelrl.bench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pixelrl.bench: stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _overrides(opts: dict[str, str], key: str) -> list[str]:
    try:
        found = shlex.split(opts[key])
    except ValueError as e:
        raise ConfigError(f"{key}={opts[key]!r}: {e}") from None
    bad = [o for o in found if "=" not in o and not o.startswith("~")]
    if bad:
        raise ConfigError(f"{key}= takes overrides like algo.num_envs=4, not {bad[0]!r}")
    return found


def _check_command(name: str, args: list[str]) -> None:
    from pixelrl import compose_config
    from pixelrl.app import hydra_error_line

    try:
        compose_config(args)
    except ConfigError as e:
        raise ConfigError(f"{name}: {e}") from None
    except Exception as e:  # Hydra's and OmegaConf's composition errors
        line = hydra_error_line(e)
        if line is None:
            raise
        raise ConfigError(f"{name}: {line}") from None


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _run(opts: dict[str, str]) -> int:
    names = [n for n in opts["which"].split(",") if n]
    unknown = [n for n in names if n not in BENCHES and n != MEMORY and n not in SOLVES]
    if unknown:
        raise ConfigError(
            f"unknown benchmark {unknown[0]!r}; choose from: {', '.join([*BENCHES, MEMORY, *SOLVES])}"
        )
    if any(n in SOLVES for n in names):
        if len(names) > 1:
            raise ConfigError("a time-to-solve benchmark runs alone")
        if opts["ab"]:
            raise ConfigError("ab= is for throughput benchmarks; run a time-to-solve one per arm")
        return solve_main(names[0], opts)
    seconds = tool_args.number(opts, "seconds", float, 0, above=True)
    replay_frames = tool_args.number(opts, "replay_frames", int, 1000)
    rounds = tool_args.number(opts, "rounds", int, 1)
    extra, change = _overrides(opts, "args"), _overrides(opts, "ab")
    if change and MEMORY in names:
        raise ConfigError(f"ab= compares training commands; {MEMORY} runs none")
    for name in names:  # a typo in args= or ab= fails now, not after the first measurements
        if name != MEMORY and (extra or change):
            _check_command(name, [*BENCHES[name].args, *extra, *change])
    device = opts["device"]
    info = machine_info(device)
    print(machine_line(info))
    if change:
        print(
            f"each benchmark: {rounds} round(s) of the raw env with random actions, then {seconds:g}s "
            f"of real training as it is (A) and with {' '.join(change)} (B), taking turns"
        )
    else:
        print(
            f"each benchmark: raw env with random actions, then {seconds:g}s of real training; ratio = train / raw"
        )
    if extra:
        print(f"  extra overrides: {' '.join(extra)}")
    results = []
    for name in names:
        if name == MEMORY:
            try:
                r = replay_memory(replay_frames)
            except Exception as e:
                print(f"{name:<{NAME_WIDTH}} FAILED: {e}")
                results.append({"name": name, "error": str(e)})
                continue
            results.append(r)
            print(format_memory(r), flush=True)
            continue
        b = BENCHES[name]
        if device.startswith("cuda") and not b.gpu:
            print(f"{name:<{NAME_WIDTH}} skipped: A3C workers run on the CPU by design")
            continue
        try:
            if change:
                r = run_ab(b, change, rounds, seconds, device, extra)
            else:
                r = run_bench(b, seconds, device, extra)
        except Exception as e:  # one broken benchmark must not hide the others
            print(f"{name:<{NAME_WIDTH}} FAILED: {e}")
            results.append({"name": name, "error": str(e)})
            continue
        results.append(r)
        print(format_ab(r) if change else format_result(r, b.unit), flush=True)
    out = Path(opts["out"] or f"bench_results/bench_{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"machine": info, "seconds": seconds, "args": extra, "results": results}, indent=1
        )
    )
    print(f"results: {out}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
