"""Settings: bad values fail at start-up naming the variable; passwords never show."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from worker.config import ConfigError, load_settings, mask_url
from worker.development.processes import free_port


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DB_POOL_SIZE", "zero"),
        ("DB_POOL_SIZE", "0"),
        ("DB_MAX_OVERFLOW", "-1"),
        ("DB_POOL_PRE_PING", "maybe"),
        ("DATABASE_URL", "mysql://root@localhost/db"),
        ("DATABASE_URL", "::not a url::"),
        ("REDIS_URL", "http://localhost"),
        ("APP_NAME", "has spaces"),
        ("WORKER_CONCURRENCY", "0"),
        ("WORKER_PREFETCH_MULTIPLIER", "0"),
        ("WORKER_CHILD_NICE", "20"),
        ("WORKER_CHILD_NICE", "-5"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable):
        load_settings()


def test_time_limits_must_fit_inside_visibility_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASK_TIME_LIMIT", "4000")
    monkeypatch.setenv("BROKER_VISIBILITY_TIMEOUT", "3600")
    with pytest.raises(ConfigError, match="BROKER_VISIBILITY_TIMEOUT"):
        load_settings()


def test_passwords_never_show_in_repr_errors_or_failed_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given URLs whose passwords are a canary
    canary = "canary-s3cret-pw"
    monkeypatch.setenv("DATABASE_URL", f"postgresql+psycopg2://app:{canary}@db.example:5432/app")
    monkeypatch.setenv("REDIS_URL", f"redis://:{canary}@cache.example:6379/0")
    settings = load_settings()

    # Then the settings' repr, dump and SQLAlchemy URL hide it, which still carries it for use
    assert canary not in repr(settings)
    assert canary not in str(settings.model_dump())
    assert canary not in repr(settings.sqlalchemy_url)
    assert canary not in str(settings.sqlalchemy_url)
    assert settings.sqlalchemy_url.password == canary

    # And a failed connection's error does not show it
    url = f"postgresql+psycopg2://u:{canary}@127.0.0.1:{free_port()}/db"
    monkeypatch.setenv("DATABASE_URL", url)
    engine = create_engine(load_settings().sqlalchemy_url, poolclass=NullPool)
    with pytest.raises(OperationalError) as refused:
        engine.connect()
    assert canary not in str(refused.value)

    # And neither does the error about malformed settings, which names each variable
    monkeypatch.setenv("DATABASE_URL", f"mysql://user:{canary}@127.0.0.1/db")
    monkeypatch.setenv("REDIS_URL", f"http://:{canary}@127.0.0.1:6379/0")
    monkeypatch.setenv("DB_POOL_SIZE", "nope")
    with pytest.raises(ConfigError) as bad:
        load_settings()
    assert all(name in str(bad.value) for name in ("DATABASE_URL", "REDIS_URL", "DB_POOL_SIZE"))
    assert canary not in str(bad.value)


def test_defaults_match_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "DB_POOL_SIZE", "APP_NAME", "DB_MAX_OVERFLOW"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir("/")  # no .env
    settings = load_settings()
    assert settings.database_url.get_secret_value() == (
        "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    )
    assert settings.redis_url.get_secret_value() == "redis://127.0.0.1:6379/0"
    assert (settings.db_pool_size, settings.db_max_overflow, settings.app_name) == (1, 0, "worker")
    assert settings.db_pool_pre_ping is True
    assert settings.db_echo_sql is False


def test_pool_size_defaults_to_children_per_cpu_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("WORKER_CONCURRENCY", "WORKER_CHILDREN_PER_CPU"):
        monkeypatch.delenv(name, raising=False)
    assert load_settings().pool_children == 3 * (os.cpu_count() or 1)
    monkeypatch.setenv("WORKER_CHILDREN_PER_CPU", "5")
    assert load_settings().pool_children == 5 * (os.cpu_count() or 1)
    monkeypatch.setenv("WORKER_CONCURRENCY", "7")
    assert load_settings().pool_children == 7


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "postgresql+psycopg2://app:hunter2@db.internal:5432/app",
            "postgresql+psycopg2://app:***@db.internal:5432/app",
        ),
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://default:p%40ss@cache:6379/1", "redis://default:***@cache:6379/1"),
        (
            "postgresql://db/app?sslmode=require&password=x",
            "postgresql://db/app?sslmode=require&password=***",
        ),
        ("postgresql://postgres@127.0.0.1/postgres", "postgresql://postgres@127.0.0.1/postgres"),
    ],
)
def test_mask_url_hides_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked
