"""JSON log lines and the task they are about, without a worker: formatter, bindings, settings."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from celery.app.task import Context
from celery.contrib.testing.mocks import TaskMessage

from worker.config import ConfigError, Settings, load_settings
from worker.runtime import json_logs, log_context
from worker.runtime.task import WorkerRequest

CORE = ["time", "level", "logger", "message", "pid", "role", "hostname"]


def line(record: logging.LogRecord) -> dict[str, Any]:
    text = json_logs.JsonLines(hostname="host-1").format(record)
    assert "\n" not in text
    value = json.loads(text)
    assert isinstance(value, dict)
    return value


def record(message: str = "hello %s", *args: object, **attributes: object) -> logging.LogRecord:
    made = logging.LogRecord("tests.unit", logging.INFO, __file__, 1, message, args or None, None)
    made.__dict__.update(attributes)
    return made


def a_task(task_id: str, correlation: str | None = None, retries: int = 0) -> Any:
    """What task_prerun passes: a task whose request is the run's context."""
    headers = {"correlation_id": correlation} if correlation else None
    request = Context(
        id=task_id,
        retries=retries,
        headers=headers,
        delivery_info={"routing_key": "worker"},
    )
    return SimpleNamespace(name="tasks.posts.record_view", request=request)


@pytest.fixture
def no_binding() -> Iterator[None]:
    assert log_context.current() == {}
    yield
    while log_context._runs.stack:  # a failed test must not leave a run bound for the next
        log_context.leave_task()


def test_a_line_is_one_json_object_with_the_common_fields_first() -> None:
    shown = line(record("hello %s", "world"))

    assert list(shown)[: len(CORE)] == CORE
    assert shown["message"] == "hello world"
    assert shown["level"] == "INFO"
    assert shown["logger"] == "tests.unit"
    assert shown["pid"] == os.getpid()
    assert shown["role"] == "main"
    assert shown["hostname"] == "host-1"
    assert shown["time"].endswith("+00:00")
    assert "task_id" not in shown  # outside a task, no task fields at all


def test_an_exception_is_one_field_with_its_traceback() -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        failed = record("it failed", exc_info=sys.exc_info())

    shown = line(failed)

    assert shown["message"] == "it failed"
    assert shown["exception"].startswith("Traceback (most recent call last)")
    assert "ValueError: bad\nvalue" in shown["exception"]


def test_extra_fields_are_kept_never_over_the_common_ones_and_celery_data_is_not_dumped() -> None:
    shown = line(
        record(
            "Task %s received",
            "x",
            user_id=7,
            level="spoofed",
            data={"id": "t-1", "name": "tasks.posts.record_view", "args": "[secret]"},
        )
    )

    assert shown["user_id"] == 7
    assert shown["level"] == "INFO"
    assert "data" not in shown
    assert "[secret]" not in json.dumps(shown)
    # Celery's line about a task names it in `data`: that is its task
    assert (shown["task_id"], shown["task_name"]) == ("t-1", "tasks.posts.record_view")
    assert shown.keys() >= set(log_context.TASK_FIELDS)


def test_a_task_run_binds_its_fields_and_leaves_nothing_for_the_next(no_binding: None) -> None:
    log_context.enter_task(a_task("first", correlation="req-1", retries=2))
    inside = line(record("working"))
    log_context.leave_task()
    log_context.enter_task(a_task("second"))
    next_run = line(record("working"))
    log_context.leave_task()
    after = line(record("idle"))

    assert {key: inside[key] for key in log_context.TASK_FIELDS} == {
        "task_id": "first",
        "task_name": "tasks.posts.record_view",
        "queue": "worker",
        "retries": 2,
        "correlation_id": "req-1",
    }
    assert (next_run["task_id"], next_run["correlation_id"], next_run["retries"]) == (
        "second",
        None,
        0,
    )
    assert "task_id" not in after


def test_a_task_run_lends_its_correlation_id_to_the_tasks_it_enqueues(no_binding: None) -> None:
    from worker.client import current_correlation_id

    log_context.enter_task(a_task("outer", correlation="req-2"))
    during = current_correlation_id()
    log_context.leave_task()

    assert during == "req-2"
    assert current_correlation_id() is None


def test_nested_eager_runs_restore_the_outer_binding(no_binding: None) -> None:
    log_context.enter_task(a_task("outer", correlation="req-outer"))
    log_context.enter_task(a_task("inner"))
    inner = dict(log_context.current())
    log_context.leave_task()
    outer = dict(log_context.current())
    log_context.leave_task()

    assert (inner["task_id"], inner["correlation_id"]) == ("inner", None)
    assert (outer["task_id"], outer["correlation_id"]) == ("outer", "req-outer")
    assert log_context.current() == {}


def test_a_bound_line_of_celery_about_another_task_names_that_task(no_binding: None) -> None:
    log_context.enter_task(a_task("running"))
    shown = line(record("Task x received", data={"id": "other", "name": "tasks.other"}))
    log_context.leave_task()

    assert (shown["task_id"], shown["task_name"], shown["correlation_id"]) == (
        "other",
        "tasks.other",
        None,
    )


def test_only_a_valid_correlation_header_is_taken() -> None:
    assert log_context.correlation_of({"correlation_id": "req-3"}) == "req-3"
    for bad in ({"correlation_id": 42}, {"correlation_id": "x" * 201}, {"correlation_id": "a b"}):
        assert log_context.correlation_of(bad) is None
    assert log_context.correlation_of(None) is None


def test_the_main_process_request_binds_its_task_and_hands_the_header_to_the_child(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from celery.worker.request import Request

    from worker.runtime.app import app

    app.loader.import_default_modules()
    message = TaskMessage(
        "tasks.posts.record_view", id="t-9", kwargs={"post_id": 1}, correlation_id="req-9"
    )
    message.delivery_info = {"routing_key": "worker", "redelivered": False}
    message.properties = {"correlation_id": "t-9"}  # Celery's own property: the task id
    seen: list[dict[str, object]] = []
    monkeypatch.setattr(Request, "on_accepted", lambda *_: seen.append(dict(log_context.current())))

    request = WorkerRequest(message, app=app, task=app.tasks["tasks.posts.record_view"])
    request.on_accepted("1234", 0.0)

    # Celery keeps `correlation_id` for the property; the header reaches the child in `headers`
    assert request.correlation_id == "t-9"
    assert request.request_dict["headers"] == {"correlation_id": "req-9"}
    assert Context(request.request_dict).headers == {"correlation_id": "req-9"}
    assert seen == [
        {
            "task_id": "t-9",
            "task_name": "tasks.posts.record_view",
            "queue": "worker",
            "retries": 0,
            "correlation_id": "req-9",
        }
    ]
    assert log_context.current() == {}


def test_handling_a_raw_message_binds_what_its_headers_say() -> None:
    message = TaskMessage("tasks.posts.record_view", id="t-10", retries=3, correlation_id="req")
    message.delivery_info = {"routing_key": "worker"}

    with log_context.handling(message):
        shown = line(record("Task received"))

    assert (shown["task_id"], shown["retries"], shown["correlation_id"]) == ("t-10", 3, "req")
    assert log_context.current() == {}


def test_configure_sends_every_logger_through_one_json_handler(tmp_path: Path) -> None:
    import billiard.util

    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    logfile = tmp_path / "worker.log"
    try:
        json_logs.configure("info", str(logfile))
        json_logs.configure("info", str(logfile))  # again (a child reopening its file): one handler
        ours = [h for h in root.handlers if h.get_name() == json_logs.HANDLER_NAME]
        logging.getLogger("celery.worker.strategy").info("received")
        billiard.util.get_logger().error("Process %r exited", "ForkPoolWorker-1")
        logging.getLogger("celery").debug("below the level")
        for handler in ours:
            handler.flush()
    finally:
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
        logging.captureWarnings(False)

    assert len(ours) == 1
    written = [json.loads(text) for text in logfile.read_text().splitlines()]
    assert [(w["logger"], w["message"]) for w in written] == [
        ("celery.worker.strategy", "received"),
        ("multiprocessing", "Process 'ForkPoolWorker-1' exited"),
    ]


def test_celery_shutdown_notices_become_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "stdout"
    with path.open("w") as stdout:
        json_logs.say("worker: Warm shutdown (MainProcess)", stdout)

    [notice] = path.read_text().splitlines()
    assert json.loads(notice)["message"] == "worker: Warm shutdown (MainProcess)"


def test_log_format_is_text_unless_set_to_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    assert Settings().log_format == "text"
    monkeypatch.setenv("LOG_FORMAT", "json")
    assert load_settings().log_format == "json"
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ConfigError, match="LOG_FORMAT='xml': expected text or json"):
        load_settings()


def test_each_thread_binds_its_own_runs(no_binding: None) -> None:
    import threading

    entered = threading.Event()
    release = threading.Event()
    seen: list[object] = []

    def run_in_another_thread() -> None:
        log_context.enter_task(a_task("in-thread"))
        entered.set()
        release.wait(10)
        seen.append(log_context.current().get("task_id"))
        log_context.leave_task()

    thread = threading.Thread(target=run_in_another_thread)
    thread.start()
    entered.wait(10)
    log_context.leave_task()  # this thread entered nothing: nothing of the other is left
    release.set()
    thread.join(10)

    assert seen == ["in-thread"]
    assert log_context.current() == {}
