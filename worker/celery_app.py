"""The Celery app, configured from celeryconfig.py: what producers publish with and workers run.

Importing it opens no connection and imports no task module. The worker's own hooks (an engine
per pool child, refusals, the gated transport) are added by `worker.runtime.app`, which
`celery -A worker.app` loads.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from celery import Celery

from worker.config import get_settings

# celeryconfig.py sits next to the worker package (in a checkout and in an installed wheel).
# It is loaded by its path: an API project's own `celeryconfig` module on sys.path must never
# configure this app silently.
CONFIG_FILE = Path(__file__).resolve().parent.parent / "celeryconfig.py"


def _load_config() -> ModuleType:
    spec = importlib.util.spec_from_file_location("worker_celeryconfig", CONFIG_FILE)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the worker's Celery configuration from {CONFIG_FILE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


app = Celery(get_settings().app_name)
app.config_from_object(_load_config())
