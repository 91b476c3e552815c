"""Run tracking: metrics.jsonl (always), Weights & Biases (offline by default), TensorBoard
event files (`<run>/tb/`, logger.tensorboard), a progress bar.

Metric names are grouped: `train/...`, `losses/...`, `eval/...` (`eval_select/...`: see
eval.select_sticky_actions), `charts/...`. Every line of metrics.jsonl has `frames` (emulator
frames so far) and `time_s` (training wall-clock seconds, continued across `resume=`). Each
line is flushed when written, so a killed run keeps its log. A resumed run logs to the same
W&B run id as the run it continues (kept in wandb/run_id), and to the same TensorBoard stream:
its first event purges the steps after the checkpoint's frame, so the frames played again are
not shown twice.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import secrets
import string
import sys
import threading
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pixelrl.errors import ConfigError


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Tracker:
    def __init__(
        self,
        run_dir: Path,
        cfg: DictConfig,
        start_frames: int = 0,
        start_time_s: float = 0.0,
        group: str | None = None,
        job_name: str | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.total_frames = int(cfg.total_frames)
        self.replayed_rows = 0
        if start_frames > 0:  # resume: the frames after the checkpoint are played again
            self.replayed_rows = drop_rows_after(self.run_dir / "metrics.jsonl", start_frames)
        self._file = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        self._t0 = time.monotonic() - start_time_s
        self._fps_t, self._fps_frames = time.monotonic(), start_frames
        self._fps_every = float(cfg.logger.fps_every_s)
        self._print_every = float(cfg.logger.print_every_s)
        self._last_print = time.monotonic()
        self.fps = 0.0
        self.frames = start_frames
        # the last training games' returns (the progress line, eval.min_train_return's gate); a
        # resumed run starts from those it logged before its checkpoint
        self.recent_returns: collections.deque[float] = collections.deque(
            logged_returns(self.run_dir / "metrics.jsonl") if start_frames > 0 else (), maxlen=20
        )
        self.last_eval: float | None = None
        self.last_eval_frames: int | None = None
        self._wandb = None
        self._bar = None
        self._start_frames = start_frames
        self._write_failed_said = False
        if cfg.logger.progress and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total_frames,
                initial=start_frames,
                unit="frame",
                unit_scale=True,
                dynamic_ncols=True,
                smoothing=0.1,
            )
        self._quiet_progress = not cfg.logger.progress
        self._tb = (
            TensorBoard(self.run_dir / "tb", start_frames) if cfg.logger.tensorboard else None
        )
        self._init_wandb(cfg, group, job_name)

    # ---------------------------------------------------------------- W&B
    def _init_wandb(self, cfg: DictConfig, group: str | None, job_name: str | None) -> None:
        wcfg = cfg.logger.wandb
        if wcfg.mode == "disabled":
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        run_id = _wandb_run_id(self.run_dir / "wandb", resuming=self._start_frames > 0)
        try:
            self._wandb = self._wandb_init(wandb, cfg, wcfg, run_id, group, job_name)
        except Exception as e:  # no network, a rejected key, a W&B outage
            if wcfg.mode != "online":
                raise
            raise ConfigError(
                f"logger.wandb.mode=online: W&B did not start ({str(e).splitlines()[0][:160]}); "
                "log offline (logger.wandb.mode=offline) and `wandb sync` later"
            ) from None
        self._wandb.define_metric("frames")
        self._wandb.define_metric("*", step_metric="frames")

    def _wandb_init(self, wandb, cfg, wcfg, run_id: str, group, job_name):
        return wandb.init(
            id=run_id,
            resume="allow",  # online: continue the run; offline: a new folder with the same id
            mode=wcfg.mode,
            dir=str(self.run_dir),
            project=wcfg.project,
            entity=wcfg.entity,
            group=wcfg.group or group,
            name=wcfg.name or job_name,
            tags=list(wcfg.tags) or None,
            config=OmegaConf.to_container(cfg, resolve=True),
            settings=wandb.Settings(console="off", x_disable_stats=True, init_timeout=60),
            reinit="finish_previous",
        )

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._t0

    # ---------------------------------------------------------------- logging
    def log(self, frames: int, metrics: dict[str, Any]) -> None:
        """One line in metrics.jsonl (and one W&B log) at `frames`. A full disk costs the rows it
        cannot hold (said once), never the run."""
        row = {"frames": int(frames), "time_s": round(self.elapsed_s, 3)}
        row.update({k: _jsonable(v) for k, v in metrics.items()})
        try:
            self._file.write(json.dumps(row) + "\n")
        except OSError as e:
            if not self._write_failed_said:
                self._write_failed_said = True
                self.message(
                    f"metrics.jsonl: could not write ({e.strerror or e}); rows are dropped until "
                    "the disk has room again"
                )
        if self._wandb is not None:
            self._wandb.log(row)
        if self._tb is not None:
            self._tb.add(row)
            if self._tb.error is not None:  # its thread failed (a full disk): stop writing there
                self.message(f"tb/: TensorBoard events stopped ({self._tb.error})")
                self._tb.close()
                self._tb = None

    def episode(
        self, frames: int, episode_return: float, episode_length: int, **extra: Any
    ) -> None:
        self.recent_returns.append(float(episode_return))
        self.log(
            frames,
            {
                "train/episode_return": float(episode_return),
                "train/episode_length": int(episode_length),
                **extra,
            },
        )

    def episodes_from_info(self, frames: int, info: dict) -> int:
        """Log every episode that ended in a vector step's info; returns how many."""
        if "_episode" not in info:
            return 0
        ended = info["_episode"].nonzero()[0]
        for i in ended:
            self.episode(frames, info["episode"]["r"][i], info["episode"]["l"][i])
        return len(ended)

    def evaluation(
        self,
        frames: int,
        returns: list[float],
        lengths: list[int] | None = None,
        prefix: str = "eval",
        stalled: int = 0,
    ) -> dict:
        """Log an evaluation as <prefix>/return_mean, ... (and <prefix>/stalled: episodes that
        eval.max_steps_without_reward ended, where any did); the progress line and the job's
        result show the last "eval" one (eval_select/* scores another setting)."""
        metrics = {f"{prefix}/{k}": v for k, v in summarize_returns(returns, lengths).items()}
        if stalled:
            metrics[f"{prefix}/stalled"] = stalled
        self.last_eval_frames = int(frames)
        if prefix == "eval":
            self.last_eval = metrics["eval/return_mean"]
        self.log(frames, metrics)
        return metrics

    def video(self, frames: int, path: Path) -> None:
        if self._wandb is None:
            return
        import wandb

        self._wandb.log({"frames": int(frames), "eval/video": wandb.Video(str(path), format="mp4")})

    def progress(self, frames: int) -> None:
        """Advance the bar; every fps_every_s log train/fps."""
        now = time.monotonic()
        if self._bar is not None:
            self._bar.update(max(0, frames - self.frames))
        self.frames = frames
        if now - self._fps_t >= self._fps_every and now > self._fps_t:
            self.fps = (frames - self._fps_frames) / (now - self._fps_t)
            self._fps_t, self._fps_frames = now, frames
            self.log(frames, {"train/fps": round(self.fps, 1)})
            if self._bar is not None:
                self._bar.set_postfix_str(self._status(), refresh=False)
        if (
            self._bar is None
            and not self._quiet_progress
            and now - self._last_print >= self._print_every
        ):
            self._last_print = now
            pct = 100.0 * frames / max(1, self.total_frames)
            print(
                f"[{_human(frames)}/{_human(self.total_frames)} frames {pct:4.1f}%] {self._status()}",
                flush=True,
            )

    def _status(self) -> str:
        parts = [f"{self.fps:,.0f} fps"]
        if self.recent_returns:
            parts.append(f"return {sum(self.recent_returns) / len(self.recent_returns):.2f}")
        if self.last_eval is not None:
            parts.append(f"eval {self.last_eval:.2f}")
        parts.append(f"{_clock(self.elapsed_s)} elapsed")
        return " | ".join(parts)

    def message(self, text: str) -> None:
        """A line for the user that does not break the progress bar."""
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if not self._file.closed:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def summarize_returns(returns: list[float], lengths: list[int] | None = None) -> dict:
    """An evaluation's figures: return mean and std, episodes (and mean length)."""
    import numpy as np

    out = {
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "episodes": len(returns),
    }
    if lengths:
        out["episode_length_mean"] = float(np.mean(lengths))
    return out


class TensorBoard:
    """Every scalar of every metrics row as TensorBoard events (x = frames), written by a thread
    of its own: the training loop only appends the row (the event protos cost ~70 us a row).

    A resumed run passes the checkpoint's frame: TensorBoard then drops the earlier files' events
    after it (purge_step), as drop_rows_after drops those rows from metrics.jsonl."""

    def __init__(self, log_dir: Path, start_frames: int):
        from torch.utils.tensorboard import SummaryWriter

        purge = start_frames + 1 if start_frames > 0 else None
        self._writer = SummaryWriter(str(log_dir), purge_step=purge, flush_secs=10)
        self._rows: collections.deque = collections.deque()
        self._closed = threading.Event()
        self.error: str | None = None
        self._thread = threading.Thread(target=self._loop, name="pixelrl-tb", daemon=True)
        self._thread.start()

    def add(self, row: dict) -> None:
        self._rows.append(row)

    def _loop(self) -> None:
        while not self._closed.wait(1.0):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        try:
            while self._rows:
                row = self._rows.popleft()
                values = [
                    Summary.Value(tag=k, simple_value=float(v))
                    for k, v in row.items()
                    if k not in ("frames", "time_s") and isinstance(v, (int, float))
                ]
                if values:
                    self._writer.file_writer.add_summary(Summary(value=values), row["frames"])
        except Exception as e:  # a full disk: reported by the tracker, from the main thread
            self.error = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
            self._rows.clear()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=30)
        with contextlib.suppress(Exception):  # a full disk must not fail the close
            self._writer.close()


def check_wandb(mode: str) -> None:
    """logger.wandb.mode=online without credentials: one line before anything starts."""
    if mode == "online" and not wandb_credentials():
        raise ConfigError(
            "logger.wandb.mode=online needs W&B credentials: run `wandb login` or set "
            "WANDB_API_KEY; or log offline (logger.wandb.mode=offline) and `wandb sync` later"
        )


def wandb_credentials() -> bool:
    """Whether W&B can log in without asking: WANDB_API_KEY, an identity token file, or a netrc
    entry for the W&B host (what `wandb login` writes)."""
    import netrc
    from urllib.parse import urlparse

    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _wandb_run_id(wandb_dir: Path, resuming: bool) -> str:
    """The W&B run id for this run dir: the one saved by the run being resumed, else a new one."""
    path = wandb_dir / "run_id"
    if resuming and path.is_file():
        saved = path.read_text().strip()
        if saved:
            return saved
    alphabet = string.ascii_lowercase + string.digits  # what W&B's own ids are made of
    run_id = "".join(secrets.choice(alphabet) for _ in range(8))
    wandb_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id


def _human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def drop_rows_after(path: Path, frames: int) -> int:
    """Remove the rows logged after `frames` (a resumed run replays them from its checkpoint, so
    the log keeps one history) and a torn last line (a killed run), so that new rows start on a
    line of their own. The file is rewritten atomically. Returns how many rows were after."""
    if not path.is_file():
        return 0
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    kept, after = [], 0
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(row.get("frames", 0)) <= frames:
            kept.append(line if line.endswith("\n") else line + "\n")
        else:
            after += 1
    if len(kept) != len(lines) or (lines and not lines[-1].endswith("\n")):
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "w") as f:
            f.writelines(kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return after


def logged_returns(path: Path) -> list[float]:
    """The training-episode returns logged in a metrics.jsonl, in order (none if there is none)."""
    if not path.is_file():
        return []
    rows = read_metrics(path)
    return [
        float(r["train/episode_return"]) for r in rows if r.get("train/episode_return") is not None
    ]


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics.jsonl; a torn last line (killed run) is skipped."""
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows
