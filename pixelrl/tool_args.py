"""The `key=value` arguments of the side tools: `pixelrl.bench`, `.plot`, `.report`, `.trunk_check`.

Hydra parses the main command; these tools take a few options of their own and, some of them, paths.
A sweep's job directories have '=' in their names (`algo.lr=0.001`), so an argument that names an
existing path is a path even when it holds '='. Every problem is a `ConfigError` with a one-line
message; each tool prints it as `pixelrl.<tool>: error: <message>` and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path

from pixelrl.errors import ConfigError


def parse(
    argv: list[str], defaults: dict[str, str], *, paths: bool = False
) -> tuple[dict[str, str], list[str]]:
    """(the options: `defaults` with the given ones set, the paths in order). Without `paths`,
    every argument must be one of the options."""
    options, found = dict(defaults), []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in options:
            options[key] = value
        elif paths and (not sep or Path(arg).exists()):
            found.append(arg)
        else:
            raise ConfigError(f"unknown option {arg!r}; use {', '.join(k + '=' for k in defaults)}")
    return options, found


def number(options: dict[str, str], key: str, cast: type, least: float, *, above: bool = False):
    """options[key] as `cast` (int or float), which must be >= `least` (> `least` with `above`)."""
    text = options[key]
    try:
        value = cast(text)
    except ValueError:
        value = None
    if value is None or not (value > least if above else value >= least):  # NaN fails too
        kind = "an integer" if cast is int else "a number"
        raise ConfigError(f"{key}={text!r} must be {kind} {'>' if above else '>='} {least:g}")
    return value
