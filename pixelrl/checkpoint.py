"""Checkpoints: model + optimizer state, frame counter, RNG states and the composed config.

A checkpoint is a plain dict of tensors and Python containers, so it loads with
`torch.load(weights_only=True)`. It is written atomically: a temp file in the same directory,
fsync, then `os.replace`, so a crash mid-write never leaves a torn `last.pt`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pixelrl.errors import CheckpointError

FORMAT = "pixelrl-checkpoint"
VERSION = 1


def resolve(path: str | os.PathLike, key: str = "load") -> Path:
    """A .pt file, or a run dir (-> <dir>/checkpoints/last.pt)."""
    p = Path(path).expanduser()
    if p.is_dir():
        for candidate in (p / "checkpoints" / "last.pt", p / "last.pt"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{key}={path}: no checkpoints/last.pt in that directory")
    if not p.exists():
        raise CheckpointError(f"{key}={path}: no such file or directory")
    return p


def save(path: Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load(path: str | os.PathLike, key: str = "load") -> dict[str, Any]:
    p = resolve(path, key)
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # a torn or foreign file can fail in many ways inside the unpickler
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{key}={path}: not a readable checkpoint (corrupt or not a torch file: {first[:120]})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{key}={path}: not a pixelrl checkpoint (no '{FORMAT}' marker)")
    if payload.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{key}={path}: written by a newer pixelrl (format v{payload['version']})"
        )
    for field in ("config", "frames", "models"):
        if field not in payload:
            raise CheckpointError(f"{key}={path}: checkpoint is missing '{field}'")
    return payload


def rng_state() -> dict[str, Any]:
    py = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state((npst[0], npst[1].numpy().astype(np.uint32), *npst[2:]))
    torch.set_rng_state(state["torch"])


def spaces_to_dict(obs_space, action_space) -> dict[str, Any]:
    """Env spaces as plain data, so load_agent can rebuild a network without making an env."""
    import gymnasium as gym

    out: dict[str, Any] = {
        "obs_shape": list(obs_space.shape),
        "obs_dtype": np.dtype(obs_space.dtype).str,
    }
    if np.dtype(obs_space.dtype) != np.uint8:
        out["obs_low"] = torch.as_tensor(np.asarray(obs_space.low, np.float32))
        out["obs_high"] = torch.as_tensor(np.asarray(obs_space.high, np.float32))
    if isinstance(action_space, gym.spaces.Discrete):
        out["n"] = int(action_space.n)
    else:
        out["act_low"] = torch.as_tensor(np.asarray(action_space.low, np.float32))
        out["act_high"] = torch.as_tensor(np.asarray(action_space.high, np.float32))
    return out


def spaces_from_payload(payload: dict[str, Any]):
    import gymnasium as gym

    sp = payload.get("spaces")
    if sp is None:
        raise CheckpointError("checkpoint has no 'spaces' entry")
    dtype = np.dtype(sp["obs_dtype"])
    if "obs_low" in sp:
        low, high = sp["obs_low"].numpy(), sp["obs_high"].numpy()
    else:
        low, high = 0, 255
    obs = gym.spaces.Box(low, high, tuple(sp["obs_shape"]), dtype)
    if "n" in sp:
        return obs, gym.spaces.Discrete(int(sp["n"]))
    return obs, gym.spaces.Box(sp["act_low"].numpy(), sp["act_high"].numpy())


def learner_state(models: dict, optimizers: dict, **extra) -> dict[str, Any]:
    """The part of a checkpoint an algorithm owns: its networks' weights, its optimizers'
    statistics and any `extra` counters ({"models": ..., "optimizers": ..., "extra": ...})."""
    state = {
        "models": {name: m.state_dict() for name, m in models.items()},
        "optimizers": {name: o.state_dict() for name, o in optimizers.items()},
    }
    if extra:
        state["extra"] = extra
    return state


def restore_learner(payload: dict[str, Any], models: dict, optimizers: dict) -> None:
    """Load what learner_state saved into freshly built networks and optimizers."""
    for name, m in models.items():
        m.load_state_dict(payload["models"][name])
    for name, o in optimizers.items():
        o.load_state_dict(payload["optimizers"][name])
