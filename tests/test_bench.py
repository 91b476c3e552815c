"""python -m pixelrl.bench on a tiny budget prints ratio lines and writes parseable JSON."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pixelrl.device import cpu_multiplies_bf16
from pixelrl.machine import ISA_FLAGS

from .conftest import kill_tree


def test_bench_catch_prints_ratio_and_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pixelrl.bench", "which=catch", "seconds=7", f"out={out}"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CPUs" in proc.stdout and "torch" in proc.stdout  # the machine header
    line = next(line for line in proc.stdout.splitlines() if line.startswith("catch"))
    assert "x raw env" in line and "frames/s" in line
    data = json.loads(out.read_text())
    (r,) = data["results"]
    assert (
        r["name"] == "catch"
        and r["train"]["frames_per_s"] > 0
        and r["baseline"]["frames_per_s"] > 0
    )
    assert abs(r["ratio"] - r["train"]["frames_per_s"] / r["baseline"]["frames_per_s"]) < 1e-9
    machine = data["machine"]
    assert machine["cpus"] >= 1
    # the matmul path a run takes here, named beside the figures (in the header and the JSON)
    assert machine["auto_precision"] == ("bf16" if cpu_multiplies_bf16() else "fp32")
    assert f"precision=auto: {machine['auto_precision']}" in proc.stdout
    assert set(machine["cpu_flags"]) <= set(ISA_FLAGS)


def test_bench_rejects_unknown_benchmark():
    proc = subprocess.run(
        [sys.executable, "-m", "pixelrl.bench", "which=nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "unknown benchmark 'nope'" in proc.stderr


def test_an_ab_benchmark_takes_turns_and_reports_b_against_a(tmp_path, monkeypatch, capsys):
    """ab=: each round the raw env (and B's, for an env change), then A and B back to back, the
    arms taking turns to go first; B's frames/s as a ratio to A's of the same round."""
    from pixelrl import bench

    calls, b_speeds = [], iter([200.0, 300.0, 600.0])

    def raw(overrides, envs, seconds):
        calls.append("raw_b" if "env.resolution=64" in overrides else "raw")
        return {"frames_per_s": 1000.0, "frames_per_step": 4}

    def train(args, seconds, device, workdir):
        assert "algo.lr=1e-3" in args  # args= reaches both arms
        arm = "b" if args[-2:] == ["algo.num_envs=4", "env.resolution=64"] else "a"
        calls.append(arm)
        return {"frames_per_s": next(b_speeds) if arm == "b" else 400.0}

    monkeypatch.setattr(bench, "raw_env_speed", raw)
    monkeypatch.setattr(bench, "training_speed", train)
    out = tmp_path / "ab.json"
    argv = ["which=a3c_pong", "ab=algo.num_envs=4 env.resolution=64", "rounds=3", "seconds=1"]
    assert bench.main([*argv, "args=algo.lr=1e-3", f"out={out}"]) == 0
    assert calls == ["raw", "raw_b", "a", "b", "raw", "raw_b", "b", "a", "raw", "raw_b", "a", "b"]
    (r,) = json.loads(out.read_text())["results"]
    assert [x["b_over_a"] for x in r["rounds"]] == [0.5, 0.75, 1.5]
    assert r["b_over_a"] == 0.75 and r["ab"] == ["algo.num_envs=4", "env.resolution=64"]
    printed = capsys.readouterr().out
    assert "round 2/3: A 400 | B 300 frames/s = 0.75 x A" in printed
    assert "= 0.75 x A (median of 0.50 / 0.75 / 1.50)" in printed


@pytest.mark.parametrize(
    "argv, message",
    [
        (["which=catch", "ab=algo.num_envs=abc"], "num_envs"),
        (["which=catch", "ab=num_envs"], "ab= takes overrides like"),
        (["which=catch", "args=model.nope=1"], "nope"),
        (["which=replay_memory", "ab=algo.num_envs=4"], "runs none"),
        (["which=catch", "ab=algo.num_envs=4", "rounds=0"], "rounds="),
    ],
)
def test_a_bad_ab_or_args_is_a_one_line_error_before_anything_runs(argv, message, capsys):
    from pixelrl import bench

    assert bench.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_bench_replay_memory_reports_ratios(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pixelrl.bench",
            "which=replay_memory",
            "replay_frames=3000",
            f"out={out}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "replay_memory" in proc.stdout and "x raw" in proc.stdout
    (r,) = json.loads(out.read_text())["results"]
    assert r["frames"] == 3000 and r["raw_frame_bytes"] == 3000 * 3 * 84 * 84
    assert r["transitions"] == 3000 - 3000 // 125  # one extra slot per finished episode
    assert r["growth_ratio"] > 0 and r["sample_256_ms"] > 0


def test_a_time_to_solve_benchmark_over_seeds_reports_each_and_merges_calls(tmp_path):
    """which=catch_solve: the machinery of which=pong_solve on a toy that solves in seconds."""
    out = tmp_path / "solve.json"

    def bench(seeds: str):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pixelrl.bench",
                "which=catch_solve",
                f"seeds={seeds}",
                "minutes=3",
                "raw_seconds=2",
                f"out={out}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
        )

    # an earlier call's file, with seed 1: a call for seed 2 adds its seed to it
    earlier = {
        "name": "catch_solve",
        "seeds": [
            {
                "seed": 1,
                "solved": False,
                "fps": 1.0,
                "raw_fps": 2.0,
                "ratio": 0.5,
                "solve_cost": None,
            }
        ],
    }
    out.write_text(json.dumps(earlier))
    proc = bench("2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert [r["seed"] for r in data["seeds"]] == [1, 2] and data["machine"]["cpu"]
    assert data["seeds"][0] == earlier["seeds"][0]
    for r in data["seeds"][1:]:
        if r["solved"]:
            assert r["eval_sticky_0"] >= 0.6  # a real greedy evaluation reached the target
            assert r["solve_cost"] == pytest.approx(r["minutes"] * 60 * r["raw_fps"])
            assert r["frames"] <= r["trained_frames"]
        assert r["ratio"] == pytest.approx(r["fps"] / r["raw_fps"])
        # the raw env measured before and after the training: the cost uses their mean
        assert r["raw_fps_before"] > 0 and r["raw_fps_after"] > 0
        assert r["raw_fps"] == pytest.approx((r["raw_fps_before"] + r["raw_fps_after"]) / 2)
        assert (Path(r["run_dir"]) / "metrics.jsonl").is_file()  # kept, for pixelrl.plot
        assert r["gave_up"] == []  # Catch sets no eval.max_return: no evaluation gives up
    s = data["summary"]
    assert s["seeds"] == 2 and s["solved"] == sum(r["solved"] for r in data["seeds"])
    # seed 1 never solved: it decides the worst cost, written as null (strict JSON)
    assert s["worst_solve_cost"] is None and "Infinity" not in out.read_text()
    assert "catch_solve:" in proc.stdout and "solve cost median" in proc.stdout


def test_a_stopped_time_to_solve_benchmark_stops_its_run_and_keeps_what_it_measured(tmp_path):
    """SIGTERM (as Ctrl-C) to the benchmark mid-seed: the training command is stopped too (it
    saves its checkpoint), the seed is kept as a partial, stopped run, later seeds are not run."""
    out = tmp_path / "solve.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pixelrl.bench",
            "which=catch_solve",
            "seeds=1,2",
            "minutes=10",
            "raw_seconds=1",
            "args=algo.lr=1e-9",  # never solves: the stop, not a solve, ends the seed
            f"out={out}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    log = tmp_path / "solve" / "seed_1" / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if log.is_file() and sum(1 for _ in open(log)) >= 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        kill_tree(proc)
    assert proc.returncode == 130, stdout + stderr
    run_dir = str(tmp_path / "solve" / "seed_1")
    left = [
        p for p in psutil.process_iter(["cmdline"]) if run_dir in " ".join(p.info["cmdline"] or [])
    ]
    assert left == [], "the training command outlived its benchmark"
    assert (tmp_path / "solve" / "seed_1" / "checkpoints" / "last.pt").is_file()
    data = json.loads(out.read_text())
    (r,) = data["seeds"]
    assert r["seed"] == 1 and r["stopped"] and not r["solved"] and r["trained_frames"] > 0
    # stopped: no second raw-env measurement delays the exit
    assert r["raw_fps_after"] is None and r["raw_fps"] == r["raw_fps_before"] > 0
    assert data["stopped"] and data["summary"]["seeds"] == 0  # a stopped seed decides nothing
    assert "seeds not run: 2" in stdout and "Traceback" not in stderr


def test_a_stop_during_the_second_raw_env_measurement_keeps_the_trained_seed(tmp_path, monkeypatch):
    """Ctrl-C in the raw-env measurement after a seed's training: the training's result is kept
    (marked stopped, cost from the first measurement) and no robustness check starts."""
    from pixelrl import raw_speed, solve_bench

    calls = []

    def raw(overrides, num_envs, seconds):
        calls.append(overrides)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {"frames_per_s": 1000.0}

    def cli(args, cwd, timeout=None, cap_s=None):
        assert not any(a.startswith("mode=eval") for a in args), "a robustness check started"
        run_dir = Path(next(a for a in args if a.startswith("hydra.run.dir=")).split("=", 1)[1])
        run_dir.mkdir(parents=True)
        rows = [
            {"frames": 500, "time_s": 1.0, "eval/return_mean": 0.9},
            {"frames": 500, "time_s": 1.0, "eval/target_minutes": 0.5, "eval/target_frames": 500},
            {"frames": 800, "time_s": 2.0},
        ]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return 0, "", "", False

    monkeypatch.setattr(raw_speed, "raw_env_speed", raw)
    monkeypatch.setattr(solve_bench, "_cli", cli)
    b = solve_bench.SOLVES["pong_solve"]
    r = solve_bench.run_seed(b, 1, 1.0, 1.0, [], tmp_path)
    assert len(calls) == 2 and r["stopped"] and r["solved"]
    assert r["raw_fps_after"] is None and r["raw_fps"] == r["raw_fps_before"] == 1000.0
    assert r["solve_cost"] == pytest.approx(0.5 * 60 * 1000.0) and "eval_sticky_025" not in r


@pytest.mark.parametrize(
    "cost, raw, cap_minutes", [(None, 1000.0, 10.0), (3e5, 1000.0, 5.0), (3e5, 250.0, 10.0)]
)
def test_a_cap_in_solve_cost_is_the_time_that_cost_takes_at_the_raw_speed(
    tmp_path, monkeypatch, cost, raw, cap_minutes
):
    """cost=: a seed's cap is cost / the raw env's frames/s measured just before it, unless
    minutes= is sooner (3e5 frames at 1000 frames/s: 5 min; at 250 frames/s 20 min > 10)."""
    from pixelrl import raw_speed, solve_bench

    caps = []

    def cli(args, cwd, timeout=None, cap_s=None):
        if "mode=eval" in args:
            return 0, json.dumps({"return_mean": 0.0}) + "\n", "", False
        caps.append(cap_s)
        run_dir = Path(next(a for a in args if a.startswith("hydra.run.dir=")).split("=", 1)[1])
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.jsonl").write_text(json.dumps({"frames": 800, "time_s": 2.0}) + "\n")
        return 130, "", "", False  # stopped at its cap, unsolved

    monkeypatch.setattr(raw_speed, "raw_env_speed", lambda *a: {"frames_per_s": raw})
    monkeypatch.setattr(solve_bench, "_cli", cli)
    b = solve_bench.SOLVES["pong_solve"]
    r = solve_bench.run_seed(b, 1, 10.0, 1.0, [], tmp_path, cost)
    assert caps == [pytest.approx(cap_minutes * 60)] and r["cap_minutes"] == pytest.approx(
        cap_minutes
    )
    assert not r["solved"] and not r.get("stopped")


@pytest.mark.parametrize("final", ["last.pt", "average.pt", "select.pt", None])
def test_a_seed_trained_past_its_solve_scores_the_solving_and_the_final_policy(
    tmp_path, monkeypatch, final
):
    """eval.frames_past_target: the solve's figures are the solving evaluation's (not the later
    ones), its robustness check plays target.pt, and the final policy is checked too: last.pt, or
    average.pt where the run evaluates averaged weights (eval.average_frames); and select.pt
    where the run chose one (eval.select_sticky_actions; beside average.pt). A run that stopped
    at its solve (no target.pt; its workers still logged a few frames past it) has no final
    policy apart from its solving one, best.pt."""
    from pixelrl import raw_speed, solve_bench

    loaded, swept = [], []

    def cli(args, cwd, timeout=None, cap_s=None):
        run_dir = Path(next(a for a in args if a.startswith("hydra.run.dir=")).split("=", 1)[1])
        if "mode=eval" in args:
            load = Path(next(a for a in args if a.startswith("load=")).split("=", 1)[1])
            assert "eval.episodes=30" in args  # 10 games swing by 1-2 points
            if "eval.noop_sweep=true" in args:  # the solving policy on each of the 30 starts
                assert "eval.sticky_actions=0.0" in args
                swept.append(load.name)
                games = {"noop_starts": [2, 0, 1] * 10, "returns": [21.0, 19.0, 20.0] * 10}
                run_dir.mkdir(parents=True)
                (run_dir / "eval.json").write_text(json.dumps(games))
                return 0, json.dumps({"return_mean": 20.0}) + "\n", "", False
            loaded.append(load.name)
            scores = {"target.pt": 12.0, "best.pt": 12.0, "average.pt": 16.0, final: 16.0}
            scores["select.pt"] = 15.0
            return 0, json.dumps({"return_mean": scores[load.name]}) + "\n", "", False
        (run_dir / "checkpoints").mkdir(parents=True)
        kept = {"best.pt", "last.pt", "target.pt", final} if final else {"best.pt", "last.pt"}
        if final == "select.pt":
            kept.add("average.pt")
        for name in kept:
            (run_dir / "checkpoints" / name).write_bytes(b"")
        later = "eval_select" if final == "select.pt" else "eval"  # past the solve
        rows = [
            {"frames": 500, "time_s": 1.0, "eval/return_mean": 18.5},
            {"frames": 500, "time_s": 1.0, "eval/target_minutes": 0.5, "eval/target_frames": 500},
            {"frames": 700, "time_s": 1.5, f"{later}/return_mean": 20.0},
            {"frames": 800, "time_s": 1.7, f"{later}/return_mean": 20.0},
            {"frames": 900, "time_s": 2.0, f"{later}/return_mean": 19.0},
        ]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return 0, "", "", False

    monkeypatch.setattr(raw_speed, "raw_env_speed", lambda *a: {"frames_per_s": 1000.0})
    monkeypatch.setattr(solve_bench, "_cli", cli)
    b = solve_bench.SOLVES["pong_solve"]
    past = ["eval.frames_past_target=400"] if final else []
    r = solve_bench.run_seed(b, 1, 1.0, 1.0, past, tmp_path)
    assert r["solved"] and r["frames"] == 500 and r["eval_sticky_0"] == 18.5
    assert r["eval_sticky_025"] == 12.0
    # the solving policy's exact score at sticky 0, and each start's game
    assert swept == ["target.pt" if final else "best.pt"] and r["eval_sticky_0_exact"] == 20.0
    assert r["exact"]["by_start"] == {0: 19.0, 1: 20.0, 2: 21.0}
    assert "every no-op start at 0.0: 20.00" in solve_bench.format_seed(r)
    if final is None:
        assert loaded == ["best.pt"] and "final_frames" not in r
        assert "eval_sticky_025_final" not in r and "final policy" not in solve_bench.format_seed(r)
        return
    assert r["eval_sticky_025"] == 12.0 and r["eval_sticky_025_final"] == 16.0
    assert r["final_frames"] == 900
    if final == "select.pt":  # chosen by the first of its best evaluations past the solve
        assert loaded == ["target.pt", "average.pt", "select.pt"]
        assert r["select_evals"] == [(700, 20.0), (800, 20.0), (900, 19.0)]
        assert (r["select_frames"], r["select_eval"]) == (700, 20.0)
        assert r["eval_sticky_0_final"] is None and r["eval_sticky_025_select"] == 15.0
        assert r["robustness_final"]["checkpoint"].endswith("average.pt")
        line = "final policy at 0.0M: sticky 0.25: 16.0 | select.pt from 0.0M (chose 20.0) "
        line += "sticky 0.25: 15.0"
        assert line in solve_bench.format_seed(r)
        return
    assert loaded == ["target.pt", final] and "select_frames" not in r
    assert r["eval_sticky_0_final"] == 19.0
    assert "final policy at 0.0M: eval 19.0 sticky 0.25: 16.0" in solve_bench.format_seed(r)


@pytest.mark.parametrize("extra", [[], ["env.sticky_actions=0.25"]])
def test_pong_solve_scores_the_solve_at_sticky_0_and_the_robustness_check_at_025(extra):
    """The commands pong_solve runs are valid configs, and its evaluations play the sticky
    actions they claim whatever the training uses."""
    from pixelrl import solve_bench
    from pixelrl.app import compose_config
    from pixelrl.evaluate import eval_env_config

    b = solve_bench.SOLVES["pong_solve"]
    train = compose_config([*b.args, *extra, *b.eval_args])
    assert eval_env_config(train).sticky_actions == 0.0
    # its evaluations may give up early (Pong's best return is known), but only periodic ones
    assert train.eval.max_return == 21
    robust = compose_config([*b.args, *extra, *b.eval_args, *b.robustness])
    assert eval_env_config(robust).sticky_actions == 0.25
    # the solve's exact score: sticky 0, each of env.noop_max starts once in its 30 games
    exact = compose_config([*b.args, *extra, *b.exact])
    assert eval_env_config(exact).sticky_actions == 0.0 and exact.eval.noop_sweep
    assert exact.env.noop_max == solve_bench.ROBUSTNESS_EPISODES


@pytest.mark.parametrize(
    "args, device, expected",
    [
        ("", "cpu", ("", "cpu")),
        ("algo=actor_critic", "cuda", ("algo=actor_critic device=cuda", "cuda")),
        ("device=cuda:1 seed=3", "cpu", ("device=cuda:1 seed=3", "cuda:1")),
        ("device=cpu", "cuda", ("device=cpu", "cpu")),  # the run's own override wins
    ],
)
def test_a_time_to_solve_benchmark_trains_on_the_device_it_reports(args, device, expected):
    from pixelrl.bench import solve_device

    assert solve_device(args, device) == expected


@pytest.mark.parametrize(
    "extra, algo, envs",
    [
        ([], "a3c", 8),
        (["algo=actor_critic"], "actor_critic", 16),
        # an experiment picks its own algo: the benchmark's algo=a3c must not override it
        (["experiment=a2c_pong_64"], "actor_critic", 64),
        (["experiment=a3c_pong_sticky"], "a3c", 8),
    ],
)
def test_pong_solve_trains_what_args_ask_for(extra, algo, envs):
    from pixelrl.app import check_config, compose_config
    from pixelrl.solve_bench import SOLVES, command_args

    cfg = compose_config(command_args(SOLVES["pong_solve"], extra), check=False)
    check_config(cfg)
    assert (cfg.algo.name, cfg.env.name, cfg.algo.num_envs) == (algo, "Pong", envs)
