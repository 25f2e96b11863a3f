"""The operators' dashboard: queues, workers, dead letters with retry, the outbox, the view buffer.

`python -m worker dashboard` serves it (the `dashboard` extra: FastAPI, uvicorn, Jinja2). Every
page has a JSON twin under `/api`, and every action calls the functions the CLI calls.
"""

from __future__ import annotations

import importlib.util

# The `dashboard` extra: each package and the modules it may be imported as.
REQUIREMENTS = (
    ("fastapi", ("fastapi",)),
    ("uvicorn", ("uvicorn",)),
    ("jinja2", ("jinja2",)),
    ("python-multipart", ("python_multipart", "multipart")),  # forms; FastAPI imports either
)


def missing_requirement() -> str | None:
    """The first package of the `dashboard` extra that is not installed, or None."""
    for package, modules in REQUIREMENTS:
        if not any(importlib.util.find_spec(module) for module in modules):
            return package
    return None
