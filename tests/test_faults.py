"""Fault injection: the ways real runs end badly, each checked end to end on the real CLI.

Every case runs `python -m pixelrl` in its own process group (as a shell, `timeout`, SLURM or
docker starts it), injects one fault, and is bounded in time. After each case the `faults`
fixture checks that nothing is left behind: no process still working in the case's directory
(workers, env processes, resource trackers) and no shared-memory segment in /dev/shm that no live
process maps (one still mapped belongs to a run of another test going on beside this one).

  stop signals to the whole group (SIGTERM, SIGINT) for A3C, REINFORCE's episode workers and A2C
  on env worker processes: exit 143 / 130 with a final checkpoint, within seconds
  kill -9 of one worker: exit 1 naming it, with a checkpoint written after the fault
  kill -9 of the main process: every worker and segment gone within 5 s
  two runs into one run dir, two resumes of one run, a fresh run into a used dir: refused
  a full disk (RLIMIT_FSIZE) at periodic saves: training goes on, the previous last.pt intact
  values that used to pass validation and crash later: one line, exit 2
  resume overrides that change the networks or the optimizer: one line naming the key
  a checkpoint moved out of its run dir and resumed: a new, named run dir
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pixelrl import checkpoint

from .conftest import FAST, metrics, wait_for_rows

LONG = ["total_frames=100000000", "eval.every_frames=0", "checkpoint.every_frames=0"]
A3C = ["algo=a3c", "env=Catch", "algo.num_workers=2"]
REINFORCE = [
    "algo=reinforce",
    "env=Catch",
    "algo.collector=workers",
    "algo.normalize_returns=episode",
]
A2C_PROCS = ["algo=actor_critic", "env=Catch", "env.backend=procs", "algo.num_envs=4"]
SETUPS = {"a3c": A3C, "reinforce": REINFORCE, "a2c_procs": A2C_PROCS}


def _shm() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("psm_")}


def _mapped(names: set[str]) -> set[str]:
    """Those of the segments `names` that a live process has mapped: in use by a run that is still
    going (another test's, when the suite runs on several pytest processes), so not a leftover of
    this one, whose processes are gone by the time this is asked."""
    found: set[str] = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/maps") as f:
                found.update(n for line in f for n in names if line.rstrip().endswith("/" + n))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _left_in(directory: Path) -> list[psutil.Process]:
    """Processes (other than this one) whose working directory is inside `directory`."""
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.pid != os.getpid() and Path(p.cwd()).is_relative_to(directory):
                if p.status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError, OSError):
            continue
    return out


def no_leftovers(directory: Path, shm_before: set[str], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        procs, segments = _left_in(directory), _shm() - shm_before
        if not procs:  # only then: a segment that this case's processes still map is theirs
            segments -= _mapped(segments)
        if not procs and not segments:
            return
        time.sleep(0.2)
    names = [" ".join(p.cmdline())[:100] for p in procs]
    raise AssertionError(f"left behind after {within_s:g}s: processes {names}, segments {segments}")


@pytest.fixture
def faults(tmp_path):
    """start(*args, limit_fsize=None) -> Popen of the CLI in its own process group; at teardown
    everything it started is gone (and checked to be gone)."""
    shm_before = _shm()
    procs: list[subprocess.Popen] = []

    def start(*args, limit_fsize: int | None = None):
        def preexec():
            if limit_fsize is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit_fsize, limit_fsize))

        named = {a.split("=", 1)[0] for a in args}
        fast = [f for f in FAST if f.split("=", 1)[0] not in named]
        env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
        env["NETRC"] = str(tmp_path / "no-netrc")  # no W&B credentials here
        proc = subprocess.Popen(
            [sys.executable, "-m", "pixelrl", *args, *fast],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=preexec,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    no_leftovers(tmp_path, shm_before)


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith("pixelrl: error: "), err
    return lines[-1]


def workers_of(proc) -> list[psutil.Process]:
    return [
        c
        for c in psutil.Process(proc.pid).children(recursive=True)
        if "resource_tracker" not in " ".join(c.cmdline())
    ]


# ------------------------------------------------------------------ stop signals to the group


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.parametrize("setup", list(SETUPS))
def test_a_stop_signal_to_the_process_group_ends_with_a_checkpoint(
    faults, tmp_path, setup, sig, code
):
    """`timeout`, `scancel`, `docker stop` and Ctrl-C signal every process of the group: the
    workers leave the stop to the main process, which saves and exits 128 + signal."""
    proc = faults(*SETUPS[setup], *LONG, "hydra.run.dir=run")
    wait_for_rows(tmp_path / "run" / "metrics.jsonl", min_bytes=2000)
    assert len(workers_of(proc)) >= 2  # the fault reaches workers too
    os.killpg(proc.pid, sig)
    start = time.monotonic()
    returncode, _, err = finish(proc)
    assert returncode == code, err
    assert time.monotonic() - start < 30  # bounded: no waiting for a batch or an evaluation
    assert "interrupted: checkpoint saved" in err and "Traceback" not in err, err
    payload = checkpoint.load(tmp_path / "run")
    assert payload["frames"] > 0 and "fault" not in payload


def test_a3c_resumes_from_the_checkpoint_of_a_stop(faults, tmp_path):
    proc = faults(*A3C, *LONG, "hydra.run.dir=run")
    wait_for_rows(tmp_path / "run" / "metrics.jsonl")
    os.killpg(proc.pid, signal.SIGTERM)
    assert finish(proc)[0] == 143
    stopped = checkpoint.load(tmp_path / "run")
    rows = len(metrics(tmp_path / "run"))
    resumed = faults("resume=run", f"total_frames={stopped['frames'] + 5000}")
    returncode, out, err = finish(resumed, timeout=120)
    assert returncode == 0, err
    after = checkpoint.load(tmp_path / "run")
    assert after["frames"] >= stopped["frames"] + 5000
    assert int(after["optimizers"]["policy"]["steps"]) > int(
        stopped["optimizers"]["policy"]["steps"]
    )
    new_rows = metrics(tmp_path / "run")[rows:]
    assert new_rows and min(r["frames"] for r in new_rows) >= stopped["frames"]
    assert "the checkpoint's own run dir" in out + err


def test_a_stop_cancels_an_evaluation_in_progress(faults, tmp_path):
    """An evaluation of 100,000 Catch games would take minutes: a stop must not wait for it."""
    proc = faults(
        *A3C,
        "total_frames=100000000",
        "eval.every_frames=2000",
        "eval.episodes=100000",
        "hydra.run.dir=run",
    )
    wait_for_rows(tmp_path / "run" / "metrics.jsonl", min_bytes=3000)
    time.sleep(2)  # an evaluation has started by now (every 2,000 frames)
    os.killpg(proc.pid, signal.SIGTERM)
    start = time.monotonic()
    returncode, _, err = finish(proc)
    assert returncode == 143, err
    assert time.monotonic() - start < 30
    assert not any("eval/return_mean" in r for r in metrics(tmp_path / "run"))


# ------------------------------------------------------------------ processes that die


@pytest.mark.parametrize("setup", ["a3c", "reinforce", "a2c_procs"])
def test_a_killed_worker_ends_the_run_with_a_checkpoint_after_the_fault(faults, tmp_path, setup):
    proc = faults(*SETUPS[setup], *LONG, "hydra.run.dir=run")
    wait_for_rows(tmp_path / "run" / "metrics.jsonl", min_bytes=2000)
    workers = workers_of(proc)
    assert len(workers) >= 2
    workers[-1].kill()
    returncode, _, err = finish(proc, timeout=30)
    assert returncode == 1, err
    line = one_line(err)
    assert "died" in line and "SIGKILL" in line
    assert "checkpoint written after the fault" in line, line
    payload = checkpoint.load(tmp_path / "run")
    assert payload["frames"] > 0 and "died" in payload["fault"]


@pytest.mark.parametrize("setup", list(SETUPS))
def test_a_killed_main_process_leaves_no_orphans_or_shared_memory(faults, tmp_path, setup):
    proc = faults(*SETUPS[setup], *LONG, "hydra.run.dir=run")
    wait_for_rows(tmp_path / "run" / "metrics.jsonl", min_bytes=2000)
    assert len(workers_of(proc)) >= 2
    proc.kill()  # SIGKILL to the main process only: its workers are left to notice
    proc.wait(timeout=10)
    no_leftovers(tmp_path, set(), within_s=5.0)


_MAKE_ENV = """
import sys, time, pixelrl
env = pixelrl.make_env("Catch", num_envs=4, backend="procs")
env.reset()
print("ready", flush=True)
time.sleep(600)
"""


def test_env_workers_of_a_killed_python_process_exit(tmp_path):
    """pixelrl.make_env(..., backend="procs") in a user's script that is SIGKILLed."""
    shm_before = _shm()
    proc = subprocess.Popen(
        [sys.executable, "-c", _MAKE_ENV], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert len(workers_of(proc)) >= 2
        proc.kill()
        proc.wait(timeout=10)
        no_leftovers(tmp_path, shm_before, within_s=5.0)
    finally:
        if proc.poll() is None:
            proc.kill()


# ------------------------------------------------------------------ run dirs


def test_two_runs_into_one_run_dir_and_a_fresh_run_into_a_used_one(faults, tmp_path):
    first = faults(*A3C, *LONG, "hydra.run.dir=run")
    wait_for_rows(tmp_path / "run" / "metrics.jsonl")
    second = faults(*A3C, *LONG, "hydra.run.dir=run")
    returncode, _, err = finish(second)
    assert returncode == 2 and "is in use by another pixelrl process" in one_line(err)
    os.killpg(first.pid, signal.SIGINT)
    assert finish(first)[0] == 130
    rows = metrics(tmp_path / "run")
    assert all(a["frames"] <= b["frames"] for a, b in zip(rows, rows[1:]))  # one history
    third = faults(*A3C, *LONG, "hydra.run.dir=run")
    returncode, _, err = finish(third)
    line = one_line(err)
    assert (
        returncode == 2 and "already holds a run" in line and f"resume={tmp_path / 'run'}" in line
    )


def test_two_resumes_of_one_run(faults, tmp_path):
    done = faults("algo=actor_critic", "env=Catch", "total_frames=3000", "hydra.run.dir=run")
    assert finish(done)[0] == 0
    first = faults("resume=run", "total_frames=100000000")
    time.sleep(1)
    wait_for_rows(tmp_path / "run" / "metrics.jsonl", min_bytes=4000)
    second = faults("resume=run", "total_frames=100000000")
    returncode, _, err = finish(second)
    assert returncode == 2 and "is in use by another pixelrl process" in one_line(err)
    os.killpg(first.pid, signal.SIGTERM)
    assert finish(first)[0] == 143


def test_runs_started_in_the_same_second_get_their_own_dirs(faults, tmp_path):
    procs = [
        faults("algo=actor_critic", "env=Catch", "total_frames=500", f"seed={s}") for s in (1, 1)
    ]
    for proc in procs:
        assert finish(proc)[0] == 0
    runs = sorted(p.parent for p in (tmp_path / "runs").rglob("metrics.jsonl"))
    assert len(runs) == 2 and all(r.name.endswith("_actor_critic_Catch_s1") for r in runs)


def test_a_checkpoint_moved_out_of_its_run_is_resumed_into_a_new_run_dir(faults, tmp_path):
    done = faults("algo=actor_critic", "env=Catch", "total_frames=3000", "hydra.run.dir=run")
    assert finish(done)[0] == 0
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(tmp_path / "run" / "checkpoints" / "last.pt", tmp_path / "elsewhere" / "x.pt")
    resumed = faults("resume=elsewhere/x.pt", "total_frames=6000", "hydra.run.dir=new")
    returncode, out, err = finish(resumed, timeout=120)
    assert returncode == 0, err
    assert f"run dir {tmp_path / 'new'} (a new run dir" in out + err
    assert checkpoint.load(tmp_path / "new")["frames"] >= 6000
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["x.pt"]
    # resumed from inside its run dir (Hydra's default run dir for the command): into that run,
    # and Hydra's fresh dir for this command is not left behind
    again = faults("resume=run/checkpoints/last.pt", "total_frames=9000")
    returncode, out, err = finish(again, timeout=120)
    assert returncode == 0, err
    assert "the checkpoint's own run dir" in out + err
    assert checkpoint.load(tmp_path / "run")["frames"] >= 9000
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*_Catch*"))
    assert list((tmp_path / "run" / ".hydra").glob("resume-*-overrides.yaml"))


# ------------------------------------------------------------------ a full disk


def test_a_full_disk_at_a_periodic_save_keeps_training_and_the_previous_checkpoint(
    faults, tmp_path
):
    args = ["algo=actor_critic", "env=Catch", "model.hidden=1024", "hydra.run.dir=run"]
    done = faults(*args, "total_frames=2000")
    assert finish(done)[0] == 0
    size = (tmp_path / "run" / "checkpoints" / "last.pt").stat().st_size
    before = checkpoint.load(tmp_path / "run")["frames"]
    # every file of the resumed run may grow to half a checkpoint: each save fails with EFBIG
    resumed = faults(
        "resume=run", "total_frames=20000", "checkpoint.every_frames=4000", limit_fsize=size // 2
    )
    returncode, out, err = finish(resumed, timeout=120)
    assert returncode == 1, err
    assert (out + err).count("could not write") == 2  # the periodic warning once, the final error
    assert "training goes on" in out + err
    assert "the previous one is kept" in one_line(err)
    assert checkpoint.load(tmp_path / "run")["frames"] == before  # intact, loadable
    assert max(r["frames"] for r in metrics(tmp_path / "run")) >= 16000  # it trained on
    assert not list((tmp_path / "run" / "checkpoints").glob(".*tmp*"))


# ------------------------------------------------------------------ values and overrides


BAD_VALUES = [
    (["seed=-1"], "seed=-1 is out of range"),
    (["seed=99999999999"], "seed=99999999999 is out of range"),
    (
        ["env=Pong", "model.policy_head=sigmoid"],
        "model.policy_head=sigmoid needs exactly 2 actions",
    ),
    (["load=somewhere"], "load=somewhere is for mode=eval and mode=watch"),
    (
        ["env=Pong", "env.backend=sync", "env.frame_skip_range=[2,4]"],
        "needs env.preprocess=karpathy",
    ),
    (["logger.fps_every_s=-1"], "logger.fps_every_s=-1.0 is out of range"),
    (
        ["algo=ddpg", "env=Pendulum", "env.id=CartPole-v1"],
        "env.id='CartPole-v1' has Discrete actions",
    ),
    (["algo=a3c", "algo.num_workers=100000"], "algo.num_workers=100000 starts more processes"),
    (["env=Pong", "env.backend=procs", "env.action_set=[2,9]"], "env.action_set=[2, 9] must list"),
    (["logger.wandb.mode=online"], "logger.wandb.mode=online needs W&B credentials"),
]


@pytest.mark.parametrize("args,expected", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_values_that_used_to_crash_later_are_one_line(main, monkeypatch, tmp_path, args, expected):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # no W&B credentials here
    named = {a.split("=", 1)[0] for a in args}
    code, _, err = main(
        *args, "total_frames=1000", *[f for f in FAST if f.split("=")[0] not in named]
    )
    assert code == 2, err
    assert expected in one_line(err)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("metrics.jsonl"))


def test_resume_refuses_what_would_not_fit_and_allows_the_rest(faults, tmp_path):
    done = faults("algo=actor_critic", "env=Catch", "total_frames=2000", "hydra.run.dir=run")
    assert finish(done)[0] == 0
    for override, key in (
        ("model.hidden=64", "model.hidden"),
        ("algo.optimizer=adam", "algo.optimizer"),
    ):
        refused = faults("resume=run", "total_frames=4000", override)
        returncode, _, err = finish(refused)
        assert returncode == 2 and f"resume: {key}=" in one_line(err), err
    allowed = faults("resume=run", "total_frames=4000", "algo.lr=1e-4", "algo.entropy_coef=0.02")
    assert finish(allowed, timeout=120)[0] == 0
