"""The errors pixelrl ends a run with: each message is one line meant for the user.

They live apart from every other module so that the lowest layers (envs, models, buffers) can
raise them without importing the schema or the run context. `exit_code` is the process's exit
status when one of them ends the command line.
"""

from __future__ import annotations


class PixelrlError(Exception):
    """A failure the user can act on; str(error) is the whole message, one line."""

    exit_code = 1


class ConfigError(PixelrlError, ValueError):
    """A bad configuration value or combination (exit status 2)."""

    exit_code = 2


class CheckpointError(PixelrlError, ValueError):
    """A checkpoint path or payload that cannot be used (exit status 2)."""

    exit_code = 2


class TrainingError(PixelrlError, RuntimeError):
    """Training cannot go on: a worker died, an env failed (exit status 1)."""

    exit_code = 1
