"""Run tracking (pixelrl/tracking.py): metrics.jsonl kept as one history."""

import json

from pixelrl.tracking import drop_rows_after

from .conftest import FAST, metrics


def test_resume_drops_the_rows_logged_after_the_checkpoint(tmp_path):
    """A resumed run replays the frames after its checkpoint: the log keeps one history."""
    log = tmp_path / "metrics.jsonl"
    rows = [{"frames": f, "time_s": f / 10, "train/episode_return": -21.0} for f in (10, 20, 30)]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"frames": 4')  # torn line
    assert drop_rows_after(log, 20) == 1
    assert [r["frames"] for r in metrics(tmp_path)] == [10, 20]
    assert log.read_text().endswith("}\n")  # the torn line is gone: new rows start cleanly
    assert drop_rows_after(log, 20) == 0 and drop_rows_after(tmp_path / "nope.jsonl", 5) == 0


def _tb_scalars(run_dir):
    """{tag: [(step, value), ...]} read back with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_holds_what_metrics_jsonl_holds_and_a_resume_does_not_repeat_steps(
    cli, tmp_path
):
    args = ["algo=actor_critic", "env=Catch", "eval.every_frames=2000", "logger.fps_every_s=0"]
    keep = ["checkpoint.every_frames=2000", "checkpoint.keep=3"]
    cli(*args, *keep, "total_frames=4000", *FAST, "hydra.run.dir=run", check=True)
    rows = metrics(tmp_path / "run")
    scalars = _tb_scalars(tmp_path / "run")
    for tag in ("train/episode_return", "eval/return_mean", "losses/policy_loss", "train/fps"):
        expected = [(r["frames"], r[tag]) for r in rows if r.get(tag) is not None]
        got = scalars[tag]
        assert [s for s, _ in got] == [s for s, _ in expected], tag
        assert all(abs(a - b) <= 1e-6 * max(1.0, abs(b)) for (_, a), (_, b) in zip(got, expected))
    # resumed from its 2,000-frame checkpoint (kept by checkpoint.keep): the frames after it are
    # played again, and TensorBoard shows each step once, not the old value and the new one
    cli("resume=run/checkpoints/frames_000000002000.pt", "total_frames=6000", *FAST, check=True)
    steps = [s for s, _ in _tb_scalars(tmp_path / "run")["losses/policy_loss"]]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) and max(steps) >= 6000
    again = [
        (r["frames"], r["losses/policy_loss"])
        for r in metrics(tmp_path / "run")
        if "losses/policy_loss" in r
    ]
    assert [s for s, _ in _tb_scalars(tmp_path / "run")["losses/policy_loss"]] == [
        s for s, _ in again
    ]


def test_tensorboard_off_writes_nothing(cli, tmp_path):
    cli(
        "algo=actor_critic",
        "env=Catch",
        "total_frames=1000",
        "logger.tensorboard=false",
        *FAST,
        "hydra.run.dir=run",
        check=True,
    )
    assert not (tmp_path / "run" / "tb").exists()
