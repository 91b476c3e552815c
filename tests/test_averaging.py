"""eval.average_frames (pixelrl/averaging.py): evaluations play the mean of the policy's recent
weights, and best.pt, target.pt and checkpoints/average.pt keep that policy."""

import shutil

import pytest
import torch

from pixelrl import checkpoint
from pixelrl.averaging import WeightAverage
from pixelrl.run import Every
from tests.conftest import FAST, metrics


def weights(value: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2, 3), float(value)), "steps": torch.tensor(int(value))}


def test_copies_are_taken_a_quarter_window_apart_and_the_mean_spans_one_window():
    avg = WeightAverage(window=400)  # copies every 100 frames
    due = Every(avg.spacing)  # the run's schedule for them
    taken = [f for f in range(0, 1001, 20) if due(f)]
    assert taken == [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]
    for f in taken:
        avg.add(f, weights(f))
    # at 1000: its own weights and the copies of 600-900 (the copy at 1000 is not counted twice)
    mean, sets = avg.mean(1000, weights(1000))
    assert sets == 5
    assert torch.allclose(mean["w"], torch.full((2, 3), (600 + 700 + 800 + 900 + 1000) / 5))
    # an integer entry is not averaged: it is the current one
    assert mean["steps"].item() == 1000 and mean["steps"].dtype == torch.int64


def test_between_copies_the_current_weights_join_the_copies_of_the_last_window():
    avg, due = WeightAverage(window=400), Every(100)
    for f in range(0, 1051, 50):
        if due(f):
            avg.add(f, weights(f))
    mean, sets = avg.mean(1050, weights(1050))
    assert sets == 5  # 700, 800, 900, 1000 and the current 1050 (600 is more than 400 ago)
    assert torch.allclose(mean["w"], torch.full((2, 3), (700 + 800 + 900 + 1000 + 1050) / 5))


def test_a_copy_is_a_copy_and_early_on_the_mean_has_fewer_sets():
    avg = WeightAverage(window=400)
    due = Every(avg.spacing, start=1000)  # a resumed run: copies from 1100 on
    live = weights(1.0)
    assert not due(1050)
    assert due(1100)
    avg.add(1100, live)
    live["w"] += 1.0  # the learner's tensors move on in place
    mean, sets = avg.mean(1150, live)
    assert sets == 2 and torch.allclose(mean["w"], torch.full((2, 3), 1.5))


def test_the_copies_go_into_a_payload_and_come_back_only_where_they_fit():
    avg = WeightAverage(window=400)
    for f in (100, 200, 300):
        avg.add(f, weights(f))
    saved = avg.payload()
    assert [c["frames"] for c in saved] == [100, 200, 300]
    back = WeightAverage(window=400)
    # a copy from after the checkpoint, one of another shape, and junk are left out
    odd = {"w": torch.zeros(3, 2), "steps": torch.tensor(0)}
    junk = [*saved, {"frames": 400, "policy": weights(400)}, {"frames": 50, "policy": odd}, 7]
    assert back.restore(junk, weights(300), before=300) == 3
    assert back.restore(None, weights(300), before=300) == 3  # nothing saved: nothing added
    mean, sets = back.mean(350, weights(350))
    assert sets == 4 and torch.allclose(mean["w"], torch.full((2, 3), (100 + 200 + 300 + 350) / 4))
    saved[0]["policy"]["w"] += 1000.0  # what came back is a copy of its own
    assert torch.equal(back.mean(350, weights(350))[0]["w"], mean["w"])


def test_a_resumed_run_goes_on_averaging_over_the_weights_it_had(cli, tmp_path):
    """last.pt carries the weight copies: the first policy averaged after a resume spans the whole
    window, as in a run never stopped. A checkpoint without them (from before they were saved)
    starts averaging again, and says so."""
    args = ["algo=actor_critic", "env=Catch", "eval.every_frames=0", "eval.final=false"]
    args += ["eval.average_frames=8000", "checkpoint.every_frames=6000", *FAST]
    (tmp_path / "a").mkdir()
    cli(*args, "total_frames=12000", "hydra.run.dir=a", check=True)
    last = checkpoint.load(tmp_path / "a/checkpoints/last.pt")
    assert [c["frames"] for c in last["average_copies"]][-1] <= last["frames"]
    assert len(last["average_copies"]) == 5
    # the same run, as a pixelrl from before the copies were saved would have left it
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    old = {k: v for k, v in last.items() if k not in ("average_copies", "format", "version")}
    (tmp_path / "b/checkpoints/last.pt").unlink()
    checkpoint.save(tmp_path / "b/checkpoints/last.pt", old)
    sets = {}
    for name in ("a", "b"):
        more = cli("resume=" + name, "total_frames=14000", check=True)
        said = "holds no copies of earlier weights" in more.stdout + more.stderr
        average = checkpoint.load(tmp_path / name / "checkpoints/average.pt")
        sets[name] = (average["extra"]["averaged_weight_sets"], said)
    assert sets == {"a": (5, False), "b": (1, True)}


@pytest.mark.parametrize("algo", ["actor_critic", "a3c"])
def test_a_run_evaluates_the_averaged_policy_and_keeps_it(cli, tmp_path, algo):
    args = [f"algo={algo}", "env=Catch", "total_frames=24000", "eval.every_frames=6000"]
    args += ["eval.average_frames=8000", "eval.episodes=2", "checkpoint.every_frames=6000"]
    args += ["checkpoint.keep=10"]
    proc = cli(*args, "hydra.run.dir=.", *FAST, check=True)
    ckpts = tmp_path / "checkpoints"
    average, last = checkpoint.load(ckpts / "average.pt"), checkpoint.load(ckpts / "last.pt")
    assert average["frames"] == last["frames"] >= 24000
    assert average["extra"] == {"average_frames": 8000, "averaged_weight_sets": 5}
    assert "optimizers" not in average  # the evaluated policy only
    w_avg, w_last = average["models"]["policy"], last["models"]["policy"]
    assert w_avg.keys() == w_last.keys()
    assert any(not torch.equal(w_avg[k], w_last[k]) for k in w_avg)  # not the last weights
    best = checkpoint.load(ckpts / "best.pt")
    assert best["extra"]["average_frames"] == 8000 and best["extra"]["averaged_weight_sets"] >= 2
    assert len([r for r in metrics(tmp_path) if "eval/return_mean" in r]) >= 4
    assert "the mean of 5 weight sets over the last 8,000 frames" in proc.stdout + proc.stderr
    # the periodic checkpoints, written at the evaluations' frames, are the learner's: resumable
    periodic = sorted(ckpts.glob("frames_*.pt"))
    assert len(periodic) >= 4
    for path in periodic:
        payload = checkpoint.load(path)
        assert "optimizers" in payload and "average_frames" not in payload.get("extra", {})
    # it plays as any checkpoint does
    played = cli("mode=eval", f"load={ckpts / 'average.pt'}", "eval.episodes=2", *FAST, check=True)
    assert '"return_mean"' in played.stdout
    if algo == "actor_critic":  # at the end average.pt cannot be written: one clear line, no crash
        (ckpts / "average.pt").unlink()
        (ckpts / "average.pt").mkdir()
        more = cli("resume=.", "total_frames=30000", check=True)
        out = more.stdout + more.stderr
        assert "could not write checkpoints/average.pt (Is a directory); last.pt holds" in out
        assert "training goes on" not in out and "checkpoint: None" not in out
        assert checkpoint.load(ckpts / "last.pt")["frames"] >= 30000
