"""A prepared statement's SQL, built from named parameters; a malformed one is refused early."""

from __future__ import annotations

import pytest

from worker.prepared import PreparedStatement


def test_parameters_become_positional_in_the_order_given() -> None:
    statement = PreparedStatement("two_args", "SELECT :b::int + 1, :a", {"a": "text", "b": "int"})
    assert statement.prepare_sql == "PREPARE two_args (text, int) AS SELECT $2::int + 1, $1"
    assert statement.execute_sql == "EXECUTE two_args (%(a)s, %(b)s)"


@pytest.mark.parametrize(
    ("name", "sql", "types", "message"),
    [
        ("two words", "SELECT :a", {"a": "int"}, "not a plain SQL identifier: 'two words'"),
        ("typo", "SELECT :a, :b", {"a": "int"}, r"typo: parameters \['a', 'b'\] but types for"),
    ],
)
def test_a_malformed_statement_is_refused_where_it_is_defined(
    name: str, sql: str, types: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        PreparedStatement(name, sql, types)
