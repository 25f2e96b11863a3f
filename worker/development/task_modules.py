"""Import the worker's `tasks.*` modules in a test process whose own `tasks` module comes first.

An API project's `tasks.py` at its rootdir is first on sys.path and hides the worker's top-level
package (`'tasks' is not a package`). The worker's modules are imported with the name `tasks` lent
to the worker's package, then the name is handed back, so the suite's `import tasks` still gets
its own module and the worker's stay importable as `tasks.posts` and the like.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

# The worker's task package, next to `worker/` (in site-packages, or at a checkout's top level).
TASKS_PACKAGE = Path(__file__).resolve().parents[2] / "tasks"


def import_worker_task_modules(names: Iterable[str]) -> None:
    """Import those of `names` that are the worker's `tasks.*` modules, whatever `tasks` is."""
    unimported = [
        name for name in names if name.partition(".")[0] == "tasks" and name not in sys.modules
    ]
    if not unimported:
        return
    with nullcontext() if _tasks_name_is_ours() else _tasks_name_lent_to_ours():
        for name in unimported:
            importlib.import_module(name)


def _tasks_name_is_ours() -> bool:
    module = sys.modules.get("tasks")
    spec = module.__spec__ if module is not None else importlib.util.find_spec("tasks")
    origin = spec.origin if spec is not None else None
    return origin is not None and Path(origin).resolve() == TASKS_PACKAGE / "__init__.py"


@contextmanager
def _tasks_name_lent_to_ours() -> Iterator[None]:
    spec = importlib.util.spec_from_file_location(
        "tasks", TASKS_PACKAGE / "__init__.py", submodule_search_locations=[str(TASKS_PACKAGE)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"the worker's task package is missing at {TASKS_PACKAGE}")
    theirs = sys.modules.pop("tasks", None)
    package = importlib.util.module_from_spec(spec)
    sys.modules["tasks"] = package
    try:
        spec.loader.exec_module(package)
        yield
    finally:
        if theirs is None:
            del sys.modules["tasks"]
        else:
            sys.modules["tasks"] = theirs
