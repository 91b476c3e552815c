"""Checkpoints: model + optimizer state, frame counter, RNG states and the composed config.

A checkpoint is a plain dict of tensors and Python containers, so it loads with
`torch.load(weights_only=True)`. It is written atomically: a temp file in the same directory,
fsync, `os.replace`, then an fsync of the directory, so a crash or a full disk mid-write never
leaves a torn `last.pt` (temp files of killed writes are removed at the next save).

A run dir's checkpoints/: `last.pt` (periodic and final), `best.pt` (the policy of the best
evaluation so far, with its figures), `target.pt` (the policy that first reached
eval.target_return, when eval.frames_past_target trains on past it), `average.pt` (with
eval.average_frames: the averaged policy at the end; best.pt and target.pt then hold averaged
policies too, and last.pt the weight copies it averages over, so a resume goes on averaging),
and with checkpoint.keep=N the N newest periodic ones as `frames_<frames>.pt` (`last.pt` is a
hard link to the newest).

Loading is defensive: the payload's structure is checked, and its config is taken as data, never
as instructions: strings that look like OmegaConf interpolations (`${oc.env:HOME}`) stay literal
strings, so a foreign checkpoint cannot make pixelrl read the environment or files.
"""

from __future__ import annotations

import os
import random
import re
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
    """Write `payload` to `path` atomically. An OSError (disk full, quota, file size limit) leaves
    the previous file as it was and propagates."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # a killed process's unfinished write
        if stale.name != f".{path.name}.tmp-{os.getpid()}":
            stale.unlink(missing_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself survives a power cut
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a directory
    finally:
        os.close(fd)


def keep_newest(directory: Path, last: Path, frames: int, keep: int) -> None:
    """checkpoint.keep=N > 1: the newest periodic checkpoint also as frames_<frames>.pt (a hard
    link to `last`, no copy), and only the N newest of those kept."""
    if keep <= 1:
        return
    named = directory / f"frames_{frames:012d}.pt"
    named.unlink(missing_ok=True)
    try:
        os.link(last, named)
    except OSError:  # a filesystem without hard links
        import shutil

        shutil.copyfile(last, named)
    for old in sorted(directory.glob("frames_*.pt"))[:-keep]:
        old.unlink(missing_ok=True)


def load(path: str | os.PathLike, key: str = "load") -> dict[str, Any]:
    p = resolve(path, key)
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # a torn or foreign file can fail in many ways inside the unpickler
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{key}={path}: not a readable checkpoint (corrupt or not a torch file: {first[:120]})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{key}={path}: not a pixelrl checkpoint (no '{FORMAT}' marker)")
    if not isinstance(payload.get("version", 0), int) or payload.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{key}={path}: written by a newer pixelrl (format v{payload['version']})"
        )
    for field in ("config", "frames", "models"):
        if field not in payload:
            raise CheckpointError(f"{key}={path}: checkpoint is missing '{field}'")
    _check_structure(payload, f"{key}={path}")
    payload["config"] = literal_config(payload["config"])
    return payload


_SHAPE = {
    "config": dict,
    "frames": int,
    "models": dict,
    "optimizers": dict,
    "extra": dict,
    "spaces": dict,
    "rng": dict,
    "time_s": (int, float),
    "updates": int,
    "average_copies": list,
}


def _check_structure(payload: dict, where: str) -> None:
    """One CheckpointError line for a payload whose parts have the wrong type."""
    for field, kind in _SHAPE.items():
        value = payload.get(field)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise CheckpointError(f"{where}: '{field}' has the wrong type ({type(value).__name__})")
    cfg = payload["config"]
    for section in ("algo", "env"):
        if not isinstance(cfg.get(section), dict) or not isinstance(cfg[section].get("name"), str):
            raise CheckpointError(f"{where}: its config has no {section}.name")
    for name, state in payload["models"].items():
        if not isinstance(state, dict):
            raise CheckpointError(f"{where}: models.{name} is not a state dict")


def literal_config(value: Any) -> Any:
    """A checkpoint's config with every '${' escaped: OmegaConf then reads interpolation-like
    strings as the literal text they are (the schema defines no interpolations of its own)."""
    if isinstance(value, dict):
        return {k: literal_config(v) for k, v in value.items()}
    if isinstance(value, list):
        return [literal_config(v) for v in value]
    if isinstance(value, str) and "${" in value:
        # OmegaConf reads 2k backslashes before '${' as k literal ones: double them, then escape
        return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", value)
    return value


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
    """Load what learner_state saved into freshly built networks and optimizers; one
    CheckpointError line when the checkpoint does not hold them or they do not fit."""
    for part, built in (("models", models), ("optimizers", optimizers)):
        saved = payload.get(part) or {}
        for name, thing in built.items():
            if name not in saved:
                raise CheckpointError(
                    f"the checkpoint has no {part}.{name} to resume from"
                    + (
                        " (best.pt of A3C or of eval.average_frames holds the evaluated policy"
                        " only: resume last.pt)"
                        if part == "optimizers"
                        else ""
                    )
                )
            try:
                thing.load_state_dict(saved[name])
            except (RuntimeError, KeyError, ValueError, TypeError) as e:
                first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
                raise CheckpointError(
                    f"the checkpoint's {part}.{name} does not fit: {first}"
                ) from None
