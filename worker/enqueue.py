"""Enqueue only after commit: `after_commit(session).record_view(...)` (`worker.producer`)."""

from worker.producer.enqueue import after_commit, enqueue_on_commit

__all__ = ["after_commit", "enqueue_on_commit"]
