"""LOG_FORMAT=json: every line of the worker, its pool children and beat is one JSON object.

`worker.runtime.app` installs it through Celery's `setup_logging` signal, whose receivers
replace Celery's own set-up in the worker, in a standalone beat, and (by inheritance through
fork) in the pool children and an embedded beat. Celery's few plain-text prints (the start-up
banners, the shutdown notices) are turned into JSON lines as well, so a log shipper never meets
a line it cannot parse.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import socket
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any, Final

import billiard
import billiard.util
from celery import Celery
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from worker.runtime import log_context
from worker.runtime.envelope.identity import usable_id

HANDLER_NAME: Final = "worker-json"
# Record attributes that are not fields: Celery's `data` (formatting arguments of its task
# lines, task arguments included) is read for the task id and name only.
_NOT_FIELDS: Final = frozenset({*RESERVED_ATTRS, "data", "taskName"})
_standalone_beat = False


def process_role() -> str:
    """`main` (the worker's consumer), `child` (a pool process) or `beat` (embedded or alone)."""
    name = billiard.current_process().name
    if _standalone_beat or name == "Beat":  # the embedded beat's process is named Beat
        return "beat"
    return "child" if name.startswith("ForkPoolWorker") else "main"


def task_of(record: logging.LogRecord) -> dict[str, object]:
    """The task fields of a line: those bound where it was logged, or those Celery passed."""
    bound = log_context.current()
    data = getattr(record, "data", None)
    if isinstance(data, Mapping):
        task_id = data.get("id")
        if usable_id(task_id) and task_id != bound.get("task_id"):
            # One of Celery's own task lines (received, succeeded, retry, failed) outside a
            # binding: it names its task in `extra={'data': {...}}`.
            fields = dict.fromkeys(log_context.TASK_FIELDS)
            name = data.get("name")
            fields.update(task_id=task_id, task_name=name if isinstance(name, str) else None)
            return fields
    return dict(bound)


class JsonLines(JsonFormatter):
    """One JSON object a line: time, level, logger, message, pid, role, hostname, the task
    fields inside a task, the `extra` fields of the call, and an exception as one field."""

    def __init__(self, hostname: str | None = None) -> None:
        super().__init__(
            reserved_attrs=sorted(_NOT_FIELDS),
            rename_fields={"exc_info": "exception", "stack_info": "stack"},
        )
        self.hostname = hostname or socket.gethostname()

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        fields: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.message,
            "pid": record.process,
            "role": process_role(),
            "hostname": self.hostname,
            **task_of(record),
        }
        log_data.update(fields)
        super().add_fields(log_data, record, message_dict)
        log_data.update(fields)  # an `extra` of the same name never hides one of these


_formatter: JsonLines | None = None


def configure(loglevel: int | str | None = None, logfile: str | None = None) -> logging.Handler:
    """Send every logger's lines to stderr (or `logfile`) as JSON; the `setup_logging` receiver.

    Replaces the handler an earlier call installed (a child that reopens its own log file).
    Python warnings become log lines too.
    """
    global _formatter
    _formatter = JsonLines()
    handler: logging.Handler
    if logfile:
        handler = logging.handlers.WatchedFileHandler(logfile)
    else:
        handler = logging.StreamHandler(sys.__stderr__)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(_formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    # billiard's pool logs to its own logger, which does not propagate (a lost child, say):
    # its errors go through this handler too, as Celery's own set-up sends them to its.
    pool_logger = billiard.util.get_logger()
    pool_logger.propagate = True
    pool_logger.setLevel(logging.ERROR)
    _no_plain_sql_echo()
    if loglevel:
        root.setLevel(loglevel.upper() if isinstance(loglevel, str) else loglevel)
    logging.captureWarnings(True)
    return handler


# The logger of `create_engine(echo=True)` (DB_ECHO_SQL): no `logging_name` in worker.db.
SQL_ECHO_LOGGER: Final = "sqlalchemy.engine.Engine"


def _no_plain_sql_echo() -> None:
    # With echo on, SQLAlchemy gives its engine logger a plain-text stdout handler unless the
    # logger has one already: a NullHandler stands in, and the lines reach the JSON handler.
    echo = logging.getLogger(SQL_ECHO_LOGGER)
    for handler in list(echo.handlers):
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            echo.removeHandler(handler)
    if not echo.handlers:
        echo.addHandler(logging.NullHandler())


def json_line(message: str, logger: str, level: int = logging.INFO) -> str:
    """`message` as the JSON line the handler would write, for output that bypasses logging."""
    record = logging.LogRecord(logger, level, __file__, 0, message, None, None)
    return (_formatter or JsonLines()).format(record) + "\n"


def say(msg: str, f: IO[str] | None = sys.__stderr__) -> None:
    """Celery's `safe_say` (shutdown notices, written from signal handlers), as a JSON line.

    Written with one `os.write`, as Celery's own: no lock is taken inside a signal handler.
    """
    if f is None:
        return
    with contextlib.suppress(OSError, ValueError):  # as Celery's: never break a shutdown
        os.write(f.fileno(), json_line(msg, "celery.apps.worker").encode())


def banner(worker: Any) -> str:
    """What the worker's start-up banner says (its configuration, its tasks), without the art."""
    info = worker.startup_info(artlines=False).strip()
    tasks = (worker.extra_info() or "").strip()
    return f"{worker.hostname} starting\n{info}" + (f"\n{tasks}" if tasks else "")


def quiet_beat(app: Celery) -> type[Any]:
    """`celery beat` without its plain-text banners, its lines marked with the role `beat`."""
    base: type[Any] = app.Beat

    class JsonBeat(base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            global _standalone_beat
            _standalone_beat = True
            super().__init__(*args, **{**kwargs, "quiet": True})

    return JsonBeat
