"""The operators' dashboard: queues, workers, dead letters with retry, the outbox, the view buffer.

`python -m worker dashboard` serves it (the `dashboard` extra: FastAPI, uvicorn, Jinja2). Every
page has a JSON twin under `/api`, and every action calls the functions the CLI calls.
"""
