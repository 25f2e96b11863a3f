"""Operators' tools: the CLI, the runtime role, dead letters, the outbox relay."""
