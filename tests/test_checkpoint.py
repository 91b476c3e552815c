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
        "config": {"algo": {"name": "x"}},
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
