"""The `worker` pytest plugin (registered by the package's pytest11 entry point).

Its fixtures live in `worker.development.plugin`; the database helpers in
`worker.development.databases`.
"""

from worker.development.plugin import *  # noqa: F403
from worker.development.plugin import __all__ as __all__
