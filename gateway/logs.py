"""structlog set-up: JSON lines under systemd (or when asked), readable key=value on a terminal."""

from __future__ import annotations

import logging
import os
import sys
from typing import Literal, TextIO

import structlog

LogFormat = Literal["auto", "json", "console"]


def configure_logging(
    fmt: LogFormat = "auto", level: str = "INFO", stream: TextIO | None = None
) -> None:
    """Route structlog to stderr (or `stream`); JSON under journald or a pipe, console on a tty."""
    out = stream or sys.stderr
    use_json = fmt == "json" or (
        fmt == "auto" and (bool(os.environ.get("JOURNAL_STREAM")) or not out.isatty())
    )
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    # sllurp logs through the standard library; the LLRP driver reports its frame errors itself.
    logging.getLogger("sllurp").setLevel(logging.CRITICAL)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger bound to a component name."""
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(component=name)
    return logger
