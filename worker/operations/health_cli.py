"""`python -m worker health`: ask this host's worker its probes, for exec probes; no Celery."""

from __future__ import annotations

import http.client

import click

from worker.config import get_settings
from worker.operations.cli_params import Seconds


@click.command("health")
@click.option("--ready", is_flag=True, help="Ask /readyz (ready for work) instead of /livez.")
@click.option("--timeout", default=2.0, show_default=True, type=Seconds(0.1, 60.0))
def health_command(ready: bool, timeout: float) -> None:
    """Exit 0 when the worker on 127.0.0.1:WORKER_HTTP_PORT answers 200, else 1."""
    port = get_settings().worker_http_port
    if port == 0:
        raise click.ClickException("probes are off (WORKER_HTTP_PORT=0)")
    path = "/readyz" if ready else "/livez"
    # http.client, not urllib: no proxy from the environment between a probe and its worker.
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        status, body = response.status, response.read()
    except (OSError, http.client.HTTPException) as error:
        raise click.ClickException(f"no answer on 127.0.0.1:{port}{path}: {error}") from None
    finally:
        connection.close()
    click.echo(body.decode(errors="replace").rstrip())
    if status != 200:
        raise SystemExit(1)
