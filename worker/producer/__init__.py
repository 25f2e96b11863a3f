"""What API services import to enqueue work.

It imports no task module and no worker runtime, and opens no connection at import.
"""
