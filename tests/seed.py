"""Moved: the Given and Then steps are `tests.steps`; this name stays for older tests."""

from tests.steps import add_posts, add_users, total_views

__all__ = ["add_posts", "add_users", "total_views"]
