"""Typed settings: the only code in the project that reads the environment."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

PositiveInt = Annotated[int, Field(ge=1)]
ModuleName = Annotated[str, Field(pattern=r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")]


DATABASE_URL_FORM = "postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DATABASE"
REDIS_URL_FORM = "redis://[:PASSWORD@]HOST:PORT/DB (or rediss://..., unix:///PATH)"


class ConfigError(RuntimeError):
    """Settings are malformed: one line per bad variable, with its value (masked) and form."""


def mask_url(url: str) -> str:
    """Return `url` with its password (userinfo or `password=` query) replaced by `***`."""
    try:
        parts = urlsplit(url)
        netloc, query = parts.netloc, parts.query
        if not netloc and "@" in url:  # userinfo outside a netloc we can parse: hide it all
            return "***"
        if parts.password is not None:
            userinfo, _, hostport = netloc.rpartition("@")
            netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() == "password" for key, _ in pairs):
            pairs = [(k, "***" if k.lower() == "password" else v) for k, v in pairs]
            query = urlencode(pairs, safe="*")
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return "***"


class Settings(BaseSettings):
    """Worker configuration, read from environment variables (and an optional `.env`)."""

    model_config = SettingsConfigDict(
        env_file=".env",
        extra="ignore",
        case_sensitive=False,
        hide_input_in_errors=True,
        frozen=True,
    )

    database_url: SecretStr = SecretStr("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    # A prefork child runs one task at a time, and a task opens its session scopes one after
    # another: one connection, kept between tasks, is all a child uses. Size + overflow is
    # what the connection budget counts per process (`python -m worker db budget`): the old
    # 2 + 10 let one node of 6 children hold 72 of the server's 100 connections. A process
    # serving requests on threads (an API) sets DB_POOL_SIZE to the requests it serves at once.
    db_pool_size: PositiveInt = 1
    db_max_overflow: Annotated[int, Field(ge=0)] = 0
    # Connections all workers together may open; None: what the server at DATABASE_URL allows
    # (max_connections less its reserved slots). Behind PgBouncer: its max_client_conn.
    db_connection_limit: PositiveInt | None = None
    db_pool_pre_ping: bool = True
    db_pool_recycle: Annotated[int, Field(ge=-1)] = 1800
    db_echo_sql: bool = False
    db_statement_timeout_ms: Annotated[int, Field(ge=0)] = 30_000
    # Off only behind a pooler that shares server sessions between clients (PgBouncer in
    # transaction mode): there a statement prepared by one client is missing for the next.
    db_prepared_statements: bool = True
    task_queue: Annotated[
        str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    ] = "worker"
    app_name: Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.-]+$")] = (
        "worker"
    )

    task_soft_time_limit: PositiveInt = 60
    task_time_limit: PositiveInt = 90
    broker_visibility_timeout: PositiveInt = 3600
    task_max_retries: Annotated[int, Field(ge=0, le=100)] = 5
    task_retry_backoff_max: PositiveInt = 60
    max_deliveries: PositiveInt = 3
    max_message_bytes: PositiveInt = 64 * 1024
    # Raw messages refused without an id to dead-letter them under, kept in Redis for operators.
    quarantine_max_entries: Annotated[int, Field(ge=10, le=1_000_000)] = 1000
    processed_task_retention_days: PositiveInt = 7

    # Pool shape. Tasks here spend most of their time waiting for PostgreSQL (a commit waits
    # for the WAL flush), so a worker runs more children than CPUs; the main process, which
    # feeds them all one message at a time, keeps priority over them (WORKER_CHILD_NICE).
    worker_concurrency: PositiveInt | None = None  # None: WORKER_CHILDREN_PER_CPU per CPU
    worker_children_per_cpu: Annotated[int, Field(ge=1, le=64)] = 3
    worker_prefetch_multiplier: Annotated[int, Field(ge=1, le=100)] = 2
    worker_child_nice: Annotated[int, Field(ge=0, le=19)] = 10
    # Celery task events, for Flower and event-based exporters; /metrics needs none.
    worker_task_events: bool = False

    # Probes (/livez, /readyz) and /metrics, served by the main process; port 0 turns them off.
    worker_http_port: Annotated[int, Field(ge=0, le=65535)] = 9540
    worker_http_host: Annotated[str, Field(min_length=1, max_length=255)] = "0.0.0.0"
    # Not ready when messages wait, every child is idle and nothing came in for this long.
    worker_stall_seconds: PositiveInt = 60
    # text: Celery's lines as they are; json: one JSON object a line, the task's ids on each.
    log_format: Literal["text", "json"] = "text"

    deactivate_batch_size: Annotated[int, Field(ge=1, le=100_000)] = 5000
    dormant_after_days: PositiveInt = 365
    view_flush_interval: Annotated[float, Field(gt=0)] = 2.0
    view_flush_chunk_size: Annotated[int, Field(ge=1, le=100_000)] = 5000
    # `python -m worker dashboard`: HTTP basic auth when a password is set; any address other
    # than loopback needs one.
    dashboard_user: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^:]+$")] = (
        "operator"
    )
    dashboard_password: SecretStr | None = None
    # Test and benchmark hook: more task modules for the worker to import (comma-separated).
    extra_task_modules: Annotated[tuple[ModuleName, ...], NoDecode] = ()

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        try:
            url = make_url(value.get_secret_value())
        except (ArgumentError, ValueError):  # ValueError: a port that is not a number
            raise ValueError("not a database URL") from None
        if url.get_backend_name() != "postgresql":
            raise ValueError("not a postgresql URL")
        return value

    @field_validator("extra_task_modules", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(name.strip() for name in value.split(",") if name.strip())
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("not a redis URL")
        return value

    @model_validator(mode="after")
    def _limits_fit_visibility(self) -> Settings:
        soft, hard = self.task_soft_time_limit, self.task_time_limit
        if soft >= hard:
            raise ValueError(
                f"TASK_SOFT_TIME_LIMIT={soft} with TASK_TIME_LIMIT={hard}: "
                "expected TASK_SOFT_TIME_LIMIT lower than TASK_TIME_LIMIT"
            )
        if self.broker_visibility_timeout <= hard:
            raise ValueError(
                f"BROKER_VISIBILITY_TIMEOUT={self.broker_visibility_timeout} with "
                f"TASK_TIME_LIMIT={hard}: expected BROKER_VISIBILITY_TIMEOUT longer than "
                "TASK_TIME_LIMIT, or Redis redelivers tasks that are still running"
            )
        return self

    @property
    def pool_children(self) -> int:
        """Pool children per worker: WORKER_CONCURRENCY, else WORKER_CHILDREN_PER_CPU per CPU."""
        if self.worker_concurrency is not None:
            return self.worker_concurrency
        return self.worker_children_per_cpu * (os.cpu_count() or 1)

    @property
    def max_task_delay_seconds(self) -> int:
        """How far ahead a message's eta or countdown may lie.

        Redis hands a message out again once it has been unacknowledged for
        BROKER_VISIBILITY_TIMEOUT, and a held message stays unacknowledged until its run ends.
        """
        return self.broker_visibility_timeout - self.task_time_limit

    @property
    def sqlalchemy_url(self) -> URL:
        """The database URL as a SQLAlchemy URL object, whose repr masks the password."""
        return make_url(self.database_url.get_secret_value())


_FORMS = {
    "database_url": DATABASE_URL_FORM,
    "redis_url": REDIS_URL_FORM,
    "extra_task_modules": "comma-separated Python module names (tasks.more,my.tasks)",
}
_SECRETS = {"database_url", "redis_url"}


def _bounds(schema: dict[str, Any]) -> str:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    low_sign = ">=" if "minimum" in schema else ">"
    high = schema.get("maximum")
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if low is not None:
        return f" {low_sign} {low}"
    return f" <= {high}" if high is not None else ""


def _form(name: str) -> str:
    """What a variable should look like, from its field's type and constraints."""
    if name in _FORMS:
        return _FORMS[name]
    schema = Settings.model_json_schema()["properties"].get(name, {})
    choices = schema.get("anyOf", [schema])
    schema = next((each for each in choices if each.get("type") != "null"), schema)
    optional = " (or unset)" if len(choices) > 1 else ""
    kind = schema.get("type")
    if "enum" in schema:
        return " or ".join(map(str, schema["enum"]))
    if kind == "boolean":
        return "true or false"
    if kind in ("integer", "number"):
        return f"{'an integer' if kind == 'integer' else 'a number'}{_bounds(schema)}{optional}"
    if "pattern" in schema:
        length = schema.get("maxLength")
        limit = f", at most {length} characters" if length else ""
        return f"text matching {schema['pattern']}{limit}"
    return str(kind or "a valid value")


def _shown(name: str, value: object) -> str:
    text = str(value)
    if name in _SECRETS:
        text = mask_url(text)
    return repr(text if len(text) <= 200 else text[:197] + "...")


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        if not item["loc"]:  # a check across variables: its message names them and their values
            lines.append(f"invalid settings {item['ctx']['error']}")
            continue
        field = str(item["loc"][0])
        shown = _shown(field, item["input"])
        lines.append(f"invalid setting {field.upper()}={shown}: expected {_form(field)}")
    return "\n".join(dict.fromkeys(lines))


def load_settings() -> Settings:
    """Read and validate the settings; `ConfigError` reports every bad variable at once."""
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
