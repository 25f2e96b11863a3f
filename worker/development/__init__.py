"""Development tooling: the pytest plugin and project-local PostgreSQL and Redis servers."""
