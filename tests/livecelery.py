"""Moved: the live-worker helpers are `worker.development.live`; this name stays for older tests."""

from worker.development.live import PROJECT_ROOT as ROOT
from worker.development.live import LiveStack, LiveWorker, wait_until

__all__ = ["ROOT", "LiveStack", "LiveWorker", "wait_until"]
