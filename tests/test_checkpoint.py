"""Atomic checkpoints, safe loading, clear errors."""

import random
import threading

import numpy as np
import pytest
import torch

from pixelrl import checkpoint
from pixelrl.checkpoint import CheckpointError


def payload():
    return {
        "config": {"algo": {"name": "x"}, "env": {"name": "y"}},
        "frames": 123,
        "models": {"policy": {"w": torch.ones(2)}},
    }


def test_save_is_atomic_and_loads_weights_only(tmp_path):
    path = tmp_path / "checkpoints" / "last.pt"
    checkpoint.save(path, payload())
    assert path.exists()
    assert not list(path.parent.glob(".*tmp*"))  # no temp file left behind
    loaded = checkpoint.load(path)
    assert loaded["frames"] == 123 and loaded["format"] == checkpoint.FORMAT
    torch.load(path, weights_only=True)  # no pickled code inside
    assert checkpoint.load(tmp_path)["frames"] == 123  # a run dir resolves to checkpoints/last.pt


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save(path, payload())
    bad = payload()
    bad["models"] = {"policy": {"lock": threading.Lock()}}  # cannot be pickled
    with pytest.raises(TypeError, match="pickle"):
        checkpoint.save(path, bad)
    assert checkpoint.load(path)["frames"] == 123
    assert not list(tmp_path.glob(".*tmp*"))


def test_missing_corrupt_and_foreign_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        checkpoint.load(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="no checkpoints/last.pt"):
        checkpoint.load(tmp_path)
    corrupt = tmp_path / "corrupt.pt"
    checkpoint.save(corrupt, payload())
    corrupt.write_bytes(corrupt.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(corrupt)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, foreign)
    with pytest.raises(CheckpointError, match="not a pixelrl checkpoint"):
        checkpoint.load(foreign)


def test_rng_state_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    path = tmp_path / "rng.pt"
    checkpoint.save(path, {**payload(), "rng": checkpoint.rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    checkpoint.set_rng_state(checkpoint.load(path)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_a_killed_writes_temp_file_goes_at_the_next_save(tmp_path):
    path = tmp_path / "last.pt"
    stale = tmp_path / ".last.pt.tmp-99999999"  # what a SIGKILL mid-write leaves
    stale.write_bytes(b"half a checkpoint")
    checkpoint.save(path, payload())
    assert not stale.exists() and checkpoint.load(path)["frames"] == 123


def test_keep_newest_keeps_the_last_n_periodic_checkpoints(tmp_path):
    last = tmp_path / "last.pt"
    for frames in (1000, 2000, 3000, 4000):
        checkpoint.save(last, {**payload(), "frames": frames})
        checkpoint.keep_newest(tmp_path, last, frames, keep=3)
    kept = sorted(p.name for p in tmp_path.glob("frames_*.pt"))
    assert kept == [f"frames_{f:012d}.pt" for f in (2000, 3000, 4000)]
    assert checkpoint.load(tmp_path / kept[-1])["frames"] == checkpoint.load(last)["frames"] == 4000
    assert checkpoint.load(tmp_path / kept[0])["frames"] == 2000  # its own file, not the newest


def test_interpolations_in_a_checkpoints_config_stay_literal(tmp_path, monkeypatch):
    """A foreign checkpoint must not make pixelrl read the environment (or files) through
    OmegaConf resolvers when its config is resolved (for W&B, for the run's own config)."""
    from omegaconf import OmegaConf

    monkeypatch.setenv("PIXELRL_SECRET", "s3cret")
    bad = payload()
    bad["config"]["logger"] = {"wandb": {"name": "${oc.env:PIXELRL_SECRET}", "tags": ["a\\${x}"]}}
    path = tmp_path / "last.pt"
    checkpoint.save(path, bad)
    cfg = OmegaConf.create(checkpoint.load(path)["config"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["logger"]["wandb"]["name"] == "${oc.env:PIXELRL_SECRET}"
    assert resolved["logger"]["wandb"]["tags"] == ["a\\${x}"]
    assert "s3cret" not in repr(resolved)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"frames": "many"}, "'frames' has the wrong type (str)"),
        ({"models": [1, 2]}, "'models' has the wrong type (list)"),
        ({"models": {"policy": 3}}, "models.policy is not a state dict"),
        ({"config": {"algo": {"name": "x"}}}, "its config has no env.name"),
        ({"config": "algo=a3c"}, "'config' has the wrong type (str)"),
    ],
)
def test_structurally_wrong_payloads_are_one_checkpoint_error(tmp_path, change, message):
    path = tmp_path / "odd.pt"
    checkpoint.save(path, {**payload(), **change})
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    assert message in str(err.value) and "\n" not in str(err.value)
