"""The runtime database role: a LOGIN role with only the privileges the worker's tasks use."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import unicodedata
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Connection, text

ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
SCRAM_ITERATIONS: Final = 4096


@dataclass(frozen=True)
class TableGrant:
    """Privileges on one table: whole-table ones, and column lists for SELECT, INSERT, UPDATE."""

    table: str
    privileges: tuple[str, ...] = ()
    select_columns: tuple[str, ...] = ()
    insert_columns: tuple[str, ...] = ()
    update_columns: tuple[str, ...] = ()

    def described(self) -> str:
        """The grants as one line, e.g. `SELECT (id, view_count), UPDATE (view_count)`."""
        parts = list(self.privileges)
        for privilege, columns in self.column_grants():
            parts.append(f"{privilege} ({', '.join(columns)})")
        return ", ".join(parts)

    def column_grants(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(privilege, columns) for each column-level privilege that lists any column."""
        listed = (
            ("SELECT", self.select_columns),
            ("INSERT", self.insert_columns),
            ("UPDATE", self.update_columns),
        )
        return tuple((privilege, columns) for privilege, columns in listed if columns)


# What the tasks touch, and nothing else (no comments, no alembic_version, no DDL, no whole-table
# reads of users). A migration that adds a table or a column a task needs adds it here; then
# re-run create-runtime-role.
RUNTIME_GRANTS: Final = (
    # record_view and flush_view_counts: UPDATE posts SET view_count (a view is not an edit)
    TableGrant("posts", select_columns=("id", "view_count"), update_columns=("view_count",)),
    # worker/users.py: never email, password_hash or ctid (system columns need a table grant).
    # FOR NO KEY UPDATE needs UPDATE on one column.
    TableGrant(
        "users",
        select_columns=("id", "is_active", "created_at", "last_seen_at"),
        update_columns=("is_active", "deactivated_at", "updated_at"),
    ),
    # The claim: INSERT ... ON CONFLICT (task_id) DO NOTHING RETURNING (the conflict target needs
    # SELECT). No DELETE: pruning goes through prune_processed_tasks, which keeps a day at least.
    TableGrant(
        "processed_tasks", select_columns=("task_id",), insert_columns=("task_id", "task_name")
    ),
    # The outbox relay reads pending rows and marks them; it never adds, rewrites or deletes one.
    TableGrant(
        "task_outbox",
        select_columns=(
            "id",
            "task_id",
            "task_name",
            "args",
            "kwargs",
            "options",
            "sent_at",
            "attempts",
        ),
        update_columns=("sent_at", "attempts", "last_error"),
    ),
    # task_failures: no table privilege; dead letters are added through record_task_failure.
)
RUNTIME_SEQUENCES: Final[tuple[str, ...]] = ()  # the worker inserts no row with a serial id
# SECURITY DEFINER functions of migrations 0003 and 0004, the only way the role prunes or
# dead-letters.
RUNTIME_FUNCTIONS: Final = (
    "prune_processed_tasks(interval)",
    "record_task_failure(text, text, jsonb, jsonb, text, text, integer, text)",
    # Migration 0005: the counts behind the metrics' dead-letter and outbox gauges, no rows.
    "sample_backlog()",
)


class RoleError(ValueError):
    """A role name or password that cannot be used."""


def check_role_name(name: str) -> str:
    """`name` if it is a plain lower-case PostgreSQL identifier, else a `RoleError`."""
    if not ROLE_NAME.match(name):
        raise RoleError(
            f"role name {name!r} must be 1-63 lower-case letters, digits or underscores, "
            "not starting with a digit"
        )
    return name


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677).

    Sending the verifier instead of the password keeps the password out of the server's
    statement log and `pg_stat_activity`. NFKC stands in for SASLprep, which it matches for
    every password without unusual code points.
    """
    salt = salt if salt is not None else secrets.token_bytes(16)
    normalized = unicodedata.normalize("NFKC", password).encode()
    salted = hashlib.pbkdf2_hmac("sha256", normalized, salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def ensure_role(connection: Connection, name: str, password: str | None = None) -> bool:
    """Create the LOGIN role `name` if it is missing (True if created); set its password if given.

    An existing role keeps its attributes; it is only made able to log in.
    """
    role = connection.dialect.identifier_preparer.quote_identifier(check_role_name(name))
    exists = connection.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :name"), {"name": name})
    connection.execute(text(f"{'ALTER' if exists else 'CREATE'} ROLE {role} LOGIN"))
    if password is not None:
        if not password:
            raise RoleError("the password is empty")
        # psycopg2 binds the verifier client-side as a literal: utility statements take no $1.
        connection.execute(
            text(f"ALTER ROLE {role} PASSWORD :verifier"), {"verifier": scram_verifier(password)}
        )
    return not exists


def grant_runtime_privileges(connection: Connection, name: str, schema: str = "public") -> None:
    """Make `name`'s privileges in this database exactly RUNTIME_GRANTS and RUNTIME_FUNCTIONS
    (revoking the rest), and CONNECT to it without TEMPORARY."""
    quote = connection.dialect.identifier_preparer.quote_identifier
    role, nsp = quote(check_role_name(name)), quote(schema)
    database = quote(connection.scalar(text("SELECT current_database()")) or "")
    statements = [
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {nsp} FROM {role}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {nsp} FROM {role}",
        f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {nsp} FROM {role}",
        f"REVOKE ALL ON SCHEMA {nsp} FROM {role}",
        f"REVOKE ALL ON DATABASE {database} FROM {role}",
        f"GRANT CONNECT ON DATABASE {database} TO {role}",
        f"GRANT USAGE ON SCHEMA {nsp} TO {role}",
    ]
    for grant in RUNTIME_GRANTS:
        table = f"{nsp}.{quote(grant.table)}"
        if grant.privileges:
            statements.append(f"GRANT {', '.join(grant.privileges)} ON {table} TO {role}")
        for privilege, columns in grant.column_grants():
            listed = ", ".join(map(quote, columns))
            statements.append(f"GRANT {privilege} ({listed}) ON {table} TO {role}")
    statements += [
        f"GRANT USAGE ON SEQUENCE {nsp}.{quote(sequence)} TO {role}"
        for sequence in RUNTIME_SEQUENCES
    ]
    statements += [
        f"GRANT EXECUTE ON FUNCTION {nsp}.{function} TO {role}" for function in RUNTIME_FUNCTIONS
    ]
    for statement in statements:
        connection.execute(text(statement))


def can_create_in_schema(connection: Connection, name: str, schema: str = "public") -> bool:
    """True if `name` may create objects in `schema` (e.g. through PUBLIC before PostgreSQL 15)."""
    return bool(
        connection.scalar(
            text("SELECT has_schema_privilege(:role, :schema, 'CREATE')"),
            {"role": name, "schema": schema},
        )
    )


def revoke_public_access(connection: Connection, database: str) -> None:
    """REVOKE CONNECT and TEMPORARY ON DATABASE `database` FROM PUBLIC.

    Its owner and superusers keep both; any other role then needs its own GRANT CONNECT.
    PostgreSQL only warns (and changes nothing) when the caller is neither of those.
    """
    quoted = connection.dialect.identifier_preparer.quote_identifier(database)
    connection.execute(text(f"REVOKE CONNECT, TEMPORARY ON DATABASE {quoted} FROM PUBLIC"))


def other_databases(connection: Connection) -> list[str]:
    """Every database of the cluster but this one and the templates, by name."""
    return list(
        connection.scalars(
            text(
                "SELECT datname FROM pg_database "
                "WHERE NOT datistemplate AND datname <> current_database() ORDER BY datname"
            )
        )
    )


def open_to_public(connection: Connection) -> list[str]:
    """The non-template databases PUBLIC (so any role) may still CONNECT to or use TEMPORARY in."""
    return list(
        connection.scalars(
            text(
                "SELECT datname FROM pg_database WHERE NOT datistemplate "
                "AND (has_database_privilege('public', oid, 'CONNECT') "
                "OR has_database_privilege('public', oid, 'TEMPORARY')) ORDER BY datname"
            )
        )
    )


def revoke_public_access_cluster_wide(connection: Connection) -> list[str]:
    """`revoke_public_access` on every other non-template database; return their names."""
    databases = other_databases(connection)
    for database in databases:
        revoke_public_access(connection, database)
    return databases


def create_runtime_role(connection: Connection, name: str, password: str | None = None) -> bool:
    """Create or update the runtime role and grant it exactly what the tasks need in this
    database, which PUBLIC may no longer CONNECT to or create temporary tables in; run as the
    schema owner, in one transaction. True if the role was created."""
    created = ensure_role(connection, name, password)
    grant_runtime_privileges(connection, name)
    revoke_public_access(connection, connection.scalar(text("SELECT current_database()")) or "")
    return created
