"""The transactional outbox writer: `in_outbox(session).deactivate_user(7)`.

It lives in `worker.producer.outbox`; the relay that publishes the rows is
`worker.operations.relay`.
"""

from worker.producer.outbox import add, in_outbox

__all__ = ["add", "in_outbox"]
