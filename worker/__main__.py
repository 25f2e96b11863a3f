"""Entry point for `python -m worker`."""

from worker.operations.cli import main

main()
