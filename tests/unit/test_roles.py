"""Role names the runtime-role commands accept: plain lower-case identifiers only."""

from __future__ import annotations

import pytest

from worker.operations.roles import RoleError, check_role_name


@pytest.mark.parametrize("name", ["", "Robert", "1abc", "a-b", "x" * 64, 'a"b'])
def test_role_names_are_plain_identifiers(name: str) -> None:
    with pytest.raises(RoleError):
        check_role_name(name)
