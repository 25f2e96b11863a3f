"""Celery tasks: thin adapters from messages to the domain functions in `worker`."""
