"""The real CLI, end to end, with tiny budgets."""

import json
import os
import signal
import time

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import pixelrl
from pixelrl import checkpoint
from pixelrl.video import read_video

from .conftest import FAST, last_json_line, metrics


def test_help_lists_algos_and_envs(cli):
    proc = cli("--help", check=True)
    for name in ("a3c", "actor_critic", "Pong", "Breakout", "Catch", "atari", "device=auto"):
        assert name in proc.stdout


def test_help_shows_the_default_commands_values():
    """--help's `key=value` examples of the common keys are the default command's values."""
    from pixelrl.__main__ import help_text

    cfg, text = pixelrl.compose_config([]), help_text()
    for key in ("seed", "device", "total_frames", "eval.every_frames", "checkpoint.keep"):
        value = OmegaConf.select(cfg, key)
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        assert f"  {key}={shown} " in text, key
    shown = (
        f"a3c_Pong: env.sticky_actions={cfg.env.sticky_actions}\n",
        f"eval.sticky_actions={cfg.eval.sticky_actions} algo.n_steps={cfg.algo.n_steps} "
        f"algo.epochs={cfg.algo.epochs} ...)",
    )
    assert all(part in text for part in shown)


BAD_INPUTS = [
    (["algo=foo"], "unknown algo 'foo'; choose one of: a3c, actor_critic"),
    (["env=Nope"], "unknown env 'Nope'; choose one of:"),
    (["total_frames=-5"], "total_frames=-5 is out of range"),
    (["algo.lr=abc"], "algo.lr='abc' is not valid: expected a number"),
    (["total_frames=1.5"], "total_frames=1.5 is not valid: expected an integer"),
    (["eval.episodes=0"], "eval.episodes=0 is out of range"),
    (
        ["algo=actor_critic", "algo.psi=xyz"],
        "algo.psi='xyz' is not allowed; choose one of: td, q, advantage, gae",
    ),
    (["algo.gamma=-0.5"], "algo.gamma=-0.5 is out of range"),
    (["device=tpu"], "device='tpu' is not allowed"),
    (["mode=eval"], "mode=eval needs a checkpoint: add load=PATH"),
    (["mode=eval", "load=missing.pt"], "load=missing.pt: no such file"),
    (["resume=missing_dir/"], "resume=missing_dir/: no such file"),
    (["env=atari"], "env.game is required"),
    (["env=atari", "env.game=zelda"], "env.game='zelda' is not an ALE ROM id"),
    (["foo=1"], "unknown config key 'foo'"),
    (["algo=a3c", "algo.recycle_scope=layers"], "algo.recycle_scope"),
]


@pytest.mark.parametrize("args,expected", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_clear_line(main, args, expected):
    code, _, err = main(*args, *FAST)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("pixelrl: error: ")
    assert expected in lines[0]
    assert "Traceback" not in err


def test_bad_input_from_a_real_process(cli):
    """The same through `python -m pixelrl`: exit status 2 and one line on stderr, nothing else."""
    proc = cli("algo.psi=xyz", *FAST, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        "pixelrl: error: algo.psi='xyz' is not allowed; choose one of: td, q, advantage, gae\n"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_a_clear_error(cli):
    proc = cli("algo=actor_critic", "env=Catch", "device=cuda", *FAST, timeout=60)
    assert proc.returncode == 2
    assert "device=cuda but CUDA is not available" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_corrupt_and_foreign_checkpoints_are_clear_errors(cli, tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 64)
    torch.save({"weights": torch.ones(1)}, tmp_path / "foreign.pt")
    for name, expected in (
        ("junk.pt", "not a readable checkpoint"),
        ("foreign.pt", "not a pixelrl checkpoint"),
    ):
        proc = cli("mode=eval", f"load={name}", *FAST, timeout=60)
        assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def pong_run(tmp_path_factory):
    """A tiny A2C run on Pong: metrics, checkpoint, a video."""
    from .conftest import run_cli

    root = tmp_path_factory.mktemp("pong")
    proc = run_cli(
        "algo=actor_critic",
        "env=Pong",
        "algo.num_envs=1",
        "model.trunk=a3c",
        "total_frames=5200",
        "eval.every_frames=4000",
        "eval.episodes=1",
        "eval.num_envs=1",
        "eval.final=false",
        "video.enabled=true",
        "video.max_steps=40",
        "checkpoint.every_frames=2000",
        "logger.wandb.mode=offline",
        "logger.fps_every_s=0.5",
        "hydra.run.dir=run1",
        cwd=root,
        check=True,
    )
    return root, root / "run1", proc


def test_pong_run_writes_metrics_checkpoint_and_video(pong_run):
    root, run_dir, _ = pong_run
    rows = metrics(run_dir)
    assert all("frames" in r and "time_s" in r for r in rows)
    episodes = [r for r in rows if "train/episode_return" in r]
    assert episodes and all(-21 <= r["train/episode_return"] <= 21 for r in episodes)
    assert all(r["train/episode_length"] > 100 for r in episodes)
    assert any("train/fps" in r for r in rows)
    assert any("losses/policy_loss" in r and "losses/value_loss" in r for r in rows)
    evals = [r for r in rows if "eval/return_mean" in r]
    assert evals and "eval/return_std" in evals[0]
    assert (run_dir / ".hydra" / "config.yaml").exists()
    payload = checkpoint.load(run_dir / "checkpoints" / "last.pt")
    assert payload["frames"] >= 5200
    assert payload["config"]["algo"]["name"] == "actor_critic"
    assert set(payload["models"]) == {"policy"} and "policy" in payload["optimizers"]
    videos = sorted((run_dir / "videos").glob("*.mp4"))
    assert videos
    frames = read_video(videos[0])
    assert frames.shape[1:] == (210, 160, 3) and 2 <= len(frames) <= 41
    # the offline W&B run holds the config, the metrics and the video
    (wandb_run,) = (run_dir / "wandb").glob("offline-run-*")
    assert list(wandb_run.glob("files/media/videos/**/*.mp4"))
    assert list(wandb_run.glob("*.wandb"))


def test_eval_and_watch_from_checkpoint(pong_run, cli):
    root, run_dir, _ = pong_run
    proc = cli(
        "mode=eval",
        f"load={run_dir}",
        "eval.episodes=2",
        "eval.num_envs=2",
        *FAST,
        "hydra.run.dir=ev",
        check=True,
    )
    result = last_json_line(proc.stdout)
    assert set(result) == {"return_mean", "return_std", "episodes", "stalled"}
    assert result["episodes"] == 2 and -21 <= result["return_mean"] <= 21
    assert result["stalled"] == 0  # an untrained agent concedes points: no game goes quiet
    proc = cli(
        "mode=watch",
        f"load={run_dir}/checkpoints/last.pt",
        "eval.episodes=1",
        "logger.wandb.mode=disabled",
        "hydra.run.dir=watch",
        check=True,
    )
    result = last_json_line(proc.stdout)
    assert result["episodes"] == 1
    paths = [line for line in proc.stdout.splitlines() if line.endswith(".mp4")]
    assert len(paths) == 1
    video = read_video(paths[0])
    assert len(video) > 100  # a whole Pong game


def test_an_evaluation_ends_games_that_go_without_a_reward(pong_run, cli, tmp_path):
    """eval.max_steps_without_reward: no Pong point comes in the first step of a game, so at 1
    each game ends after one step, 0-0, and its copy of the env starts the next (3 games on 2
    copies: one copy restarts); the result and eval.json say how many ended so."""
    _, run_dir, _ = pong_run
    proc = cli(
        "mode=eval",
        f"load={run_dir}",
        "eval.episodes=3",
        "eval.num_envs=2",
        "eval.max_steps_without_reward=1",
        *FAST,
        "hydra.run.dir=ev",
        check=True,
    )
    assert last_json_line(proc.stdout)["stalled"] == 3
    saved = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert (saved["returns"], saved["lengths"], saved["stalled"]) == ([0.0] * 3, [1] * 3, 3)
    assert "3 ended after 1 agent steps without a reward" in proc.stderr
    assert "eval.max_steps_without_reward" in proc.stderr


def test_an_evaluation_can_play_each_no_op_start_in_turn(pong_run, cli, tmp_path):
    """eval.noop_sweep: game k plays the env's no-op start k mod env.noop_max (here on ale-py's
    vector env, the run's); eval.json keeps each game's start beside its return
    (max_steps_without_reward=1 keeps the games short)."""
    _, run_dir, _ = pong_run
    common = ("mode=eval", f"load={run_dir}", "eval.max_steps_without_reward=1", *FAST)
    sweep = ("eval.episodes=5", "eval.num_envs=2", "eval.noop_sweep=true", "env.noop_max=3")
    cli(*common, *sweep, "hydra.run.dir=ev", check=True)
    saved = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert sorted(saved["noop_starts"]) == [0, 0, 1, 1, 2] and len(saved["returns"]) == 5
    cli(*common, "eval.episodes=2", "hydra.run.dir=plain", check=True)
    assert "noop_starts" not in json.loads((tmp_path / "plain" / "eval.json").read_text())


def test_a_no_op_sweep_without_no_ops_is_a_clear_error(cli):
    proc = cli("algo=actor_critic", "env=Catch", "eval.noop_sweep=true", *FAST, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "eval.noop_sweep plays each of env.noop_max no-op starts in turn" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_run_logs_the_evaluation_games_that_went_without_a_reward(cli, tmp_path):
    proc = cli(
        "algo=actor_critic",
        "env=Catch",
        "total_frames=320",
        "eval.every_frames=160",
        "eval.episodes=4",
        "eval.num_envs=2",
        "eval.max_steps_without_reward=1",
        *FAST,
        "hydra.run.dir=run",
        check=True,
    )
    evals = [r for r in metrics(tmp_path / "run") if "eval/return_mean" in r]
    # a Catch game pays only when the ball lands: at 1, every game ends after its first step
    assert evals and all(r["eval/stalled"] == 4 and r["eval/return_mean"] == 0 for r in evals)
    assert "4 ended after 1 agent steps without a reward" in proc.stdout + proc.stderr


def test_resume_continues_frame_count(pong_run, cli):
    root, run_dir, _ = pong_run
    before = metrics(run_dir)
    fast = [a for a in FAST if not a.startswith("logger.wandb.mode")]
    proc = cli(
        f"resume={run_dir}", "total_frames=6000", "logger.wandb.mode=offline", *fast, check=True
    )
    assert "resuming at" in proc.stdout + proc.stderr
    after = metrics(run_dir)[len(before) :]  # appended to the same run's log
    assert after and min(r["frames"] for r in after) >= 5200
    assert checkpoint.load(run_dir)["frames"] >= 6000
    # time continues too
    assert max(r["time_s"] for r in after) > max(r["time_s"] for r in before)
    # and so does the W&B run: a second offline folder with the first one's run id
    first, second = sorted(
        (run_dir / "wandb").glob("offline-run-*"), key=lambda p: p.stat().st_mtime
    )
    run_id = (run_dir / "wandb" / "run_id").read_text().strip()
    assert first.name.endswith(run_id) and run_id in second.name


def test_load_agent_api(pong_run):
    _, run_dir, _ = pong_run
    agent = pixelrl.load_agent(run_dir)
    env = pixelrl.make_env("Pong", seed=0, num_envs=3, backend="sync")
    obs, _ = env.reset()
    actions = agent.act(obs)
    assert actions.shape == (3,) and actions.dtype.kind == "i" and (actions < 6).all()
    env.close()


def _loss_rows(run_dir):
    return [
        {k: v for k, v in r.items() if k != "time_s"}
        for r in metrics(run_dir)
        if "losses/policy_loss" in r
    ]


@pytest.mark.parametrize("algo", ["actor_critic", "a3c"])
def test_same_seed_same_metrics(cli, tmp_path, algo):
    args = [
        f"algo={algo}",
        "env=Catch",
        "seed=7",
        "total_frames=3000",
        "eval.every_frames=0",
        "eval.final=false",
        "logger.fps_every_s=0",
        *FAST,
    ]
    if algo == "a3c":
        args.append("algo.num_workers=0")
    cli(*args, "hydra.run.dir=a", check=True)
    cli(*args, "hydra.run.dir=b", check=True)
    a, b = _loss_rows(tmp_path / "a"), _loss_rows(tmp_path / "b")
    assert len(a) >= 5 and a[:5] == b[:5]
    cli(*args[:2], "seed=8", *args[3:], "hydra.run.dir=c", check=True)
    assert _loss_rows(tmp_path / "c")[:5] != a[:5]


def test_multirun_gives_each_job_its_own_dir_and_wandb_run(cli, tmp_path):
    proc = cli(
        "-m",
        "algo=actor_critic",
        "env=Catch",
        "seed=1,2",
        "total_frames=1000",
        "eval.every_frames=0",
        "eval.final=false",
        "logger.progress=false",
        "video.enabled=false",
        "hydra.sweep.dir=sweep",
        check=True,
    )
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert len(jobs) == 2, proc.stdout
    for job in jobs:
        assert metrics(job)
        assert (job / "checkpoints" / "last.pt").exists()
        offline = list((job / "wandb").glob("offline-run-*"))
        assert len(offline) == 1
    seeds = {checkpoint.load(job)["config"]["seed"] for job in jobs}
    assert seeds == {1, 2}


def test_sigint_keeps_checkpoint_and_metrics(tmp_path, popen_cli):
    proc = popen_cli(
        "algo=actor_critic",
        "env=Catch",
        "total_frames=100000000",
        "eval.every_frames=0",
        "checkpoint.every_frames=0",
        *FAST,
        "hydra.run.dir=run",
    )
    log = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (log.exists() and log.stat().st_size > 2000):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)  # `timeout -s INT` delivers it twice: still a clean stop
    start = time.time()
    out, err = proc.communicate(timeout=30)
    assert time.time() - start < 10
    assert proc.returncode == 130, err
    assert "checkpoint saved" in err
    payload = checkpoint.load(tmp_path / "run")
    assert payload["frames"] > 0
    rows = metrics(tmp_path / "run")  # every line parses
    assert rows and max(r["frames"] for r in rows) <= payload["frames"]
    assert np.isfinite([r["time_s"] for r in rows]).all()


def test_a_repeated_sigint_is_one_request_and_a_later_one_aborts():
    from pixelrl.run import StopFlag

    stop = StopFlag()
    stop.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # at once: the same request, delivered twice
        assert stop and stop.exit_code == 130
        time.sleep(StopFlag.repeat_s + 0.1)
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C later on aborts
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
    finally:
        stop.uninstall()


@pytest.mark.gpu
def test_actor_critic_on_cuda(cli, tmp_path):
    cli(
        "algo=actor_critic",
        "env=Catch",
        "device=cuda",
        "total_frames=2000",
        *FAST,
        "hydra.run.dir=g",
        check=True,
    )
    assert checkpoint.load(tmp_path / "g")["frames"] >= 2000


def test_slurm_launcher_config_is_shipped(cli):
    proc = cli("hydra/launcher=slurm", "--cfg", "hydra", check=True)
    assert "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in proc.stdout
    assert "timeout_min: 720" in proc.stdout and "cpus_per_task: 8" in proc.stdout


def test_joblib_launcher_runs_jobs_in_parallel_processes(cli, tmp_path):
    cli(
        "-m",
        "hydra/launcher=local_parallel",
        "algo=actor_critic",
        "env=Catch",
        "seed=1,2",
        "total_frames=800",
        "eval.every_frames=0",
        "eval.final=false",
        *FAST,
        "hydra.sweep.dir=sw",
        check=True,
    )
    jobs = [p for p in (tmp_path / "sw").iterdir() if p.is_dir()]
    assert len(jobs) == 2 and all(metrics(j) for j in jobs)
    # in parallel, each job starts (its .hydra config written) before the other one ends (its
    # final checkpoint written); one after the other, the second starts after the first ended
    start = [(j / ".hydra" / "config.yaml").stat().st_mtime for j in jobs]
    end = [(j / "checkpoints" / "last.pt").stat().st_mtime for j in jobs]
    assert start[0] < end[1] and start[1] < end[0], "the two jobs did not overlap in time"


@pytest.mark.parametrize("algo", ["actor_critic", "a3c"])
def test_target_return_stops_at_the_first_evaluation_that_reaches_it(cli, tmp_path, algo):
    # Catch returns lie in [-1, 1], so the first evaluation always reaches -1. A3C evaluates in a
    # background thread while its workers train: the stop must still come from that evaluation.
    args = [f"algo={algo}", "env=Catch", "total_frames=2000000", "eval.every_frames=3000"]
    args += ["eval.target_return=-1", "eval.episodes=2", "hydra.run.dir=."]
    proc = cli(*args, *FAST, check=True)
    rows = metrics(tmp_path)
    evals = [r for r in rows if "eval/return_mean" in r]
    assert len(evals) == 1  # no final evaluation after the target is reached
    solved = [r for r in rows if "eval/target_frames" in r]
    assert len(solved) == 1 and solved[0]["eval/target_frames"] == evals[0]["frames"]
    assert 0 < solved[0]["eval/target_minutes"] < 5
    assert max(r["frames"] for r in rows) < 200_000  # stopped long before total_frames
    assert "target reached" in proc.stdout + proc.stderr
    assert (tmp_path / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize("algo", ["actor_critic", "a3c"])
def test_frames_past_target_trains_on_after_the_solve_and_keeps_the_solving_policy(
    cli, tmp_path, algo
):
    args = [f"algo={algo}", "env=Catch", "total_frames=2000000", "eval.every_frames=3000"]
    args += ["eval.target_return=-1", "eval.frames_past_target=9000", "eval.episodes=2"]
    proc = cli(*args, "hydra.run.dir=.", *FAST, check=True)
    rows = metrics(tmp_path)
    solved = [r for r in rows if "eval/target_frames" in r]
    assert len(solved) == 1
    at = solved[0]["eval/target_frames"]
    evals = [r for r in rows if "eval/return_mean" in r]
    assert evals[0]["frames"] == at  # the first evaluation reaches -1
    # it trained on: later evaluations of later policies, the final one at or past the extra frames
    assert len(evals) >= 3 and evals[-1]["frames"] >= at + 9000
    assert max(r["frames"] for r in rows) < 200_000  # and still stopped long before total_frames
    assert "training on for 9,000 frames" in proc.stdout + proc.stderr
    ckpts = tmp_path / "checkpoints"
    target = checkpoint.load(ckpts / "target.pt")
    assert target["frames"] == at and target["eval"]["eval/return_mean"] >= -1
    assert checkpoint.load(ckpts / "last.pt")["frames"] >= at + 9000


def test_select_sticky_actions_scores_the_policies_past_the_solve_and_keeps_their_best(
    cli, tmp_path
):
    """eval.select_sticky_actions on Pong (a game never ends below -21: the first evaluation
    solves): from the solve on, evaluations play at sticky actions 0.25 on games of their own, are
    logged as eval_select/*, and the first best of them is kept as select.pt; best.pt keeps the
    solve (evaluations at another setting are not comparable), and last.pt remembers the best.
    A3C, the default's path (averaged weights evaluated in a background thread); the others
    evaluate in the loop, through the same Run.evaluate."""
    args = ["algo=a3c", "env=Pong", "algo.num_workers=1", "algo.num_envs=1"]
    args += ["total_frames=2000000", "eval.every_frames=3000", "eval.episodes=1"]
    args += ["eval.num_envs=1", "eval.target_return=-21", "eval.frames_past_target=6000"]
    args += ["eval.select_sticky_actions=0.25", "checkpoint.every_frames=0"]
    proc = cli(*args, "hydra.run.dir=.", *FAST, check=True)
    rows = metrics(tmp_path)
    at = next(r["eval/target_frames"] for r in rows if "eval/target_frames" in r)
    assert [r["frames"] for r in rows if "eval/return_mean" in r] == [at]  # only the solve
    chose = [r for r in rows if "eval_select/return_mean" in r]
    assert len(chose) >= 2 and all(r["frames"] > at for r in chose)
    assert all(r["eval_select/episodes"] == 1 for r in chose)
    assert chose[-1]["frames"] >= at + 6000  # the last one scores the final policy
    assert "at sticky actions 0.25 (eval.select_sticky_actions)" in proc.stdout + proc.stderr
    best = max(r["eval_select/return_mean"] for r in chose)
    first = next(r for r in chose if r["eval_select/return_mean"] == best)
    ckpts = tmp_path / "checkpoints"
    select = checkpoint.load(ckpts / "select.pt")
    assert select["frames"] == first["frames"]
    assert select["eval"]["eval_select/return_mean"] == best
    assert checkpoint.load(ckpts / "best.pt")["frames"] == at
    assert checkpoint.load(ckpts / "last.pt")["best_select"] == best


def test_a_resumed_run_remembers_its_solve(cli, tmp_path):
    """A run that stopped at its target, resumed: as it was, there is nothing left to train; with
    eval.frames_past_target it trains on past the first solve (not a second one), and the
    solving policy is kept as target.pt."""
    args = ["algo=actor_critic", "env=Catch", "total_frames=2000000", "eval.every_frames=3000"]
    args += ["eval.target_return=-1", "eval.episodes=2"]
    cli(*args, "hydra.run.dir=.", *FAST, check=True)
    rows = metrics(tmp_path)
    at = next(r["eval/target_frames"] for r in rows if "eval/target_frames" in r)
    ckpts = tmp_path / "checkpoints"
    assert not (ckpts / "target.pt").exists()  # it stopped at the solve: best.pt is the policy

    proc = cli("resume=.", *FAST, check=True)
    assert f"reached eval.target_return=-1 at {at:,} frames" in proc.stderr
    assert len(metrics(tmp_path)) == len(rows)  # nothing trained, nothing logged

    proc = cli("resume=.", "eval.frames_past_target=9000", *FAST, check=True)
    rows = metrics(tmp_path)
    assert [r["eval/target_frames"] for r in rows if "eval/target_frames" in r] == [at]
    assert at + 9000 <= max(r["frames"] for r in rows) < 200_000
    assert checkpoint.load(ckpts / "target.pt")["frames"] == at


@pytest.mark.parametrize("algo", ["actor_critic", "a3c"])
def test_a_periodic_evaluation_that_cannot_reach_the_target_gives_up(cli, tmp_path, algo):
    # a Catch episode returns at most 1 (eval.max_return), so a mean of 2 is out of reach from
    # the first step: every periodic evaluation stops at once and logs its bound, not a mean;
    # the final evaluation is never cut short (it is the run's score)
    proc = cli(
        f"algo={algo}",
        "env=Catch",
        "total_frames=12000",
        "eval.every_frames=3000",
        "eval.episodes=4",
        "eval.target_return=2",
        "eval.max_return=1",
        "hydra.run.dir=.",
        *FAST,
        check=True,
    )
    rows = metrics(tmp_path)
    bounds = [r for r in rows if "eval/return_bound" in r]
    evals = [r for r in rows if "eval/return_mean" in r]
    assert len(bounds) >= 2 and all(r["eval/return_bound"] < 2 for r in bounds)
    assert all(r["eval/steps"] == 1 for r in bounds)  # out of reach after the first step
    assert len(evals) == 1 and evals[0]["frames"] >= 12000  # the final one only
    assert not any("eval/target_frames" in r for r in rows)
    assert "can reach at most" in proc.stdout + proc.stderr


@pytest.mark.parametrize(("floor", "periodic"), [(5.0, False), (-1.0, True)])
def test_min_train_return_holds_periodic_evaluations_back(cli, tmp_path, floor, periodic):
    proc = cli(
        "algo=actor_critic",
        "env=Catch",
        "total_frames=12000",
        "eval.every_frames=3000",
        "eval.episodes=2",
        f"eval.min_train_return={floor}",
        "hydra.run.dir=.",
        *FAST,
        check=True,
    )
    evals = [r for r in metrics(tmp_path) if "eval/return_mean" in r]
    # Catch never returns 5: only the final evaluation runs; -1 is always reached: the periodic
    # ones at 3k, 6k, 9k and 12k frames, and no second evaluation of the 12k-frame policy
    assert len(evals) == (4 if periodic else 1)
    assert len({r["frames"] for r in evals}) == len(evals)
    said = (proc.stdout + proc.stderr).count("eval.min_train_return")
    assert said == (0 if periodic else 1)


def test_a_resumed_run_counts_its_logged_games_at_the_evaluation_gate(cli, tmp_path):
    """eval.min_train_return looks at the last training games; a resumed run counts the ones it
    logged before its checkpoint, so the first evaluation due after the resume is not skipped
    for want of new games."""
    args = ["algo=actor_critic", "env=Catch", "eval.min_train_return=-1", "eval.episodes=2"]
    args += ["algo.num_envs=16", "algo.n_steps=5", "eval.final=false"]
    cli(*args, "total_frames=2000", "eval.every_frames=1000", "hydra.run.dir=.", *FAST, check=True)
    assert [r["frames"] for r in metrics(tmp_path) if "eval/return_mean" in r] == [1040, 2000]
    # one update of 16 envs x 5 steps: shorter than a Catch game (9 steps), so no new game has
    # ended when the evaluation at 2,080 frames is due
    proc = cli("resume=.", "total_frames=2080", "eval.every_frames=2080", *FAST, check=True)
    evals = [r["frames"] for r in metrics(tmp_path) if "eval/return_mean" in r]
    assert evals == [1040, 2000, 2080]
    assert "eval.min_train_return" not in proc.stdout + proc.stderr


def test_resume_and_load_a_checkpoint_older_than_the_newest_config_keys(cli, tmp_path):
    args = ["algo=actor_critic", "env=Catch", "eval.every_frames=0", "eval.final=false", *FAST]
    cli(*args, "total_frames=2000", "hydra.run.dir=old", check=True)
    path = tmp_path / "old" / "checkpoints" / "last.pt"
    payload = torch.load(path, weights_only=False)
    del payload["config"]["eval"]["min_train_return"]  # as written before these keys existed
    del payload["config"]["algo"]["precision"]
    checkpoint.save(path, payload)
    proc = cli("resume=old", "total_frames=4000", *FAST, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert max(r["frames"] for r in metrics(tmp_path / "old")) >= 4000
    proc = cli("mode=eval", "load=old", "eval.episodes=2", *FAST, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("algo", ["actor_critic", "a3c"])
def test_best_checkpoint_holds_the_best_evaluation_and_loads(cli, tmp_path, algo):
    """checkpoints/best.pt: the policy of the best evaluation so far (A3C: the snapshot it
    evaluated, not the weights it has by the time the evaluation ends), with its figures."""
    cli(
        f"algo={algo}",
        "env=Catch",
        "total_frames=24000",
        "eval.every_frames=4000",
        "eval.episodes=20",
        "checkpoint.every_frames=4000",
        "checkpoint.keep=3",
        *FAST,
        "hydra.run.dir=run",
        check=True,
        timeout=300,
    )
    evals = [r for r in metrics(tmp_path / "run") if "eval/return_mean" in r]
    best = checkpoint.load(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best["eval"]["eval/return_mean"] == max(r["eval/return_mean"] for r in evals)
    assert best["frames"] == next(
        r["frames"] for r in evals if r["eval/return_mean"] == best["eval"]["eval/return_mean"]
    )
    proc = cli(
        "mode=eval", "load=run/checkpoints/best.pt", "eval.episodes=5", *FAST, "hydra.run.dir=ev"
    )
    assert proc.returncode == 0, proc.stderr
    assert pixelrl.load_agent(tmp_path / "run" / "checkpoints" / "best.pt").act(
        np.zeros((1, 1, 20, 10), np.uint8)
    ).shape == (1,)
    assert checkpoint.load(tmp_path / "run")["frames"] >= 24000  # load=RUN is still last.pt
    periodic = sorted((tmp_path / "run" / "checkpoints").glob("frames_*.pt"))
    assert len(periodic) == 3  # checkpoint.keep=3


def test_an_optuna_study_scores_each_trial_with_its_evaluation(cli, tmp_path):
    """hydra/sweeper=optuna_study: every job returns the mean return of its final evaluation,
    the study maximizes it, and its result names the best trial's value."""
    import yaml

    proc = cli(
        "-m",
        "hydra/sweeper=optuna_study",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=1",
        "algo=actor_critic",
        "env=Catch",
        "total_frames=2000",
        "eval.episodes=20",
        "algo.lr=tag(log, interval(1e-4, 3e-3))",
        *FAST,
        "hydra.sweep.dir=study",
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    finals = []
    for job in sorted(p for p in (tmp_path / "study").iterdir() if p.is_dir()):
        evals = [r["eval/return_mean"] for r in metrics(job) if "eval/return_mean" in r]
        finals.append(evals[-1])
    assert len(finals) == 3
    result = yaml.safe_load((tmp_path / "study" / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(max(finals))
    assert set(result["best_params"]) == {"algo.lr"}


def test_a_failed_job_in_a_sweep_is_one_line_and_the_others_still_run(cli, tmp_path):
    proc = cli(
        "-m",
        "algo=actor_critic",
        "env=Catch",
        "algo.n_steps=0,5",
        "total_frames=1000",
        *FAST,
        "hydra.sweep.dir=sw",
    )
    assert proc.returncode == 0, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("pixelrl: error:")]
    assert len(errors) == 1 and "job 0 (algo.n_steps=0" in errors[0] and "out of range" in errors[0]
    assert metrics(
        tmp_path / "sw" / "1_algo.n_steps=5,algo=actor_critic,env=Catch,total_frames=1000"
    )
