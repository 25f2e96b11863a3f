"""The Celery app, configured from celeryconfig.py: what producers publish with and workers run.

Importing it opens no connection and imports no task module. The worker's own hooks (an engine
per pool child, refusals, the gated transport) are added by `worker.runtime.app`, which
`celery -A worker.app` loads.
"""

from __future__ import annotations

from celery import Celery

from worker.config import get_settings

app = Celery(get_settings().app_name)
app.config_from_object("celeryconfig")
