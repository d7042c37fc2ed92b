"""Logging and metrics through the host's imports.

`sluice.log.info("read a line", user="42")` writes one log line with fields; the host labels
it with tenant, job, batch, component and function, and bounds what one call may write.
`sluice.counter(name, delta)` and `sluice.gauge(name, value)` write metrics the host labels
with the component and function.

A component has no files, so no standard output either: inside one, `print()` and
`sys.stderr` go to the host's log (info and warn) a line at a time, and the standard `logging`
module's root logger writes there too, instead of trapping on a missing import.
"""

from __future__ import annotations

import io
import logging as _stdlib_logging
import sys
from typing import Any

from . import _wit

_LEVELS = {
    "trace": _wit.Level.TRACE,
    "debug": _wit.Level.DEBUG,
    "info": _wit.Level.INFO,
    "warn": _wit.Level.WARN,
    "error": _wit.Level.ERROR,
}


def log(level: str, message: str, **fields: Any) -> None:
    """Write one log line at `level` (`trace`, `debug`, `info`, `warn`, `error`) with
    `name=value` fields (values are written with `str`)."""
    try:
        wit_level = _LEVELS[level]
    except KeyError:
        raise ValueError(f"log level {level!r} is not one of {', '.join(_LEVELS)}") from None
    _wit.host_log(wit_level, str(message), [(str(k), str(v)) for k, v in fields.items()])


def trace(message: str, **fields: Any) -> None:
    """Write one log line at `trace`."""
    log("trace", message, **fields)


def debug(message: str, **fields: Any) -> None:
    """Write one log line at `debug`."""
    log("debug", message, **fields)


def info(message: str, **fields: Any) -> None:
    """Write one log line at `info`."""
    log("info", message, **fields)


def warn(message: str, **fields: Any) -> None:
    """Write one log line at `warn`."""
    log("warn", message, **fields)


def error(message: str, **fields: Any) -> None:
    """Write one log line at `error`."""
    log("error", message, **fields)


def counter(name: str, delta: int = 1) -> None:
    """Add `delta` to the counter `name` (the host labels it with the component and function)."""
    _wit.counter_add(name, int(delta))


def gauge(name: str, value: float) -> None:
    """Set the gauge `name` to `value`."""
    _wit.gauge_set(name, float(value))


class _HostStream(io.TextIOBase):
    """A text stream whose lines become host log lines (what `print` writes in a component)."""

    def __init__(self, level: str, name: str):
        super().__init__()
        self._level = level
        self._name = name
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        for line in lines:
            log(self._level, line, stream=self._name)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            line, self._pending = self._pending, ""
            log(self._level, line, stream=self._name)


class _HostHandler(_stdlib_logging.Handler):
    """Sends the standard `logging` module's records to the host's log."""

    _MAP = {
        _stdlib_logging.DEBUG: "debug",
        _stdlib_logging.INFO: "info",
        _stdlib_logging.WARNING: "warn",
        _stdlib_logging.ERROR: "error",
        _stdlib_logging.CRITICAL: "error",
    }

    def emit(self, record: _stdlib_logging.LogRecord) -> None:
        level = self._MAP.get(record.levelno, "info" if record.levelno < 30 else "error")
        try:
            message = record.getMessage()
        except Exception as e:  # a bad format string must not fail the batch
            message = f"{record.msg!r} (could not format: {e})"
        log(level, message, logger=record.name)


def install() -> None:
    """Inside a component: standard output, standard error and the root logger write to the
    host's log. Outside one, nothing changes."""
    if not _wit.IN_COMPONENT:
        return
    sys.stdout = _HostStream("info", "stdout")
    sys.stderr = _HostStream("warn", "stderr")
    root = _stdlib_logging.getLogger()
    root.handlers[:] = [_HostHandler()]
    root.setLevel(_stdlib_logging.INFO)


def flush() -> None:
    """Write out a line `print` left without its newline (after every call)."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, _HostStream):
            stream.flush()
