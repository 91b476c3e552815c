"""mp4 recording, streamed to ffmpeg frame by frame (a long Pong episode never sits in memory)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class VideoRecorder:
    """init(path) -> record(frame) ... -> save() -> path (None if nothing was recorded)."""

    def __init__(self, fps: int = 30):
        self.fps = fps
        self._writer = None
        self._path: Path | None = None
        self.frames = 0

    def init(self, path: Path) -> None:
        self.close()
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self.frames = 0

    def record(self, frame: np.ndarray) -> None:
        if self._path is None:
            return
        if frame.ndim == 2:
            frame = np.repeat(frame[:, :, None], 3, axis=2)
        if self._writer is None:
            import imageio.v2 as imageio

            self._writer = imageio.get_writer(
                self._path,
                fps=self.fps,
                codec="libx264",
                quality=7,
                macro_block_size=2,
                ffmpeg_log_level="error",
            )
        self._writer.append_data(np.ascontiguousarray(frame))
        self.frames += 1

    def save(self) -> Path | None:
        path = self._path if self._writer is not None else None
        self.close()
        return path

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        self._path = None


def read_video(path: Path) -> np.ndarray:
    """All frames of an mp4 as (T, H, W, 3) uint8 (tests, sanity checks)."""
    import imageio.v2 as imageio

    reader = imageio.get_reader(path)
    try:
        return np.stack([np.asarray(f) for f in reader])
    finally:
        reader.close()
