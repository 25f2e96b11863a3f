"""Run the example: the API on uvicorn, and a prefork worker with beat (which relays the outbox)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import worker

HERE = Path(__file__).resolve().parent
# Both processes start from the project root, where `celery -A worker.app` finds celeryconfig.
PROJECT_ROOT = Path(worker.__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    default_schedule = Path(tempfile.gettempdir()) / "celerybeat-schedule-blog-example"
    parser.add_argument("--schedule", default=str(default_schedule), help="beat's state file")
    options = parser.parse_args()
    python = [sys.executable, "-m"]
    worker_command = [*python, "celery", "-A", "worker.app", "worker", "--beat", "-P", "prefork"]
    worker_command += ["-c", "2", "-l", "INFO", "--schedule", str(Path(options.schedule).resolve())]
    api_command = [*python, "uvicorn", "blog_api:app", "--app-dir", str(HERE)]
    api_command += ["--host", options.host, "--port", str(options.port)]
    worker_process = subprocess.Popen(worker_command, cwd=PROJECT_ROOT)
    api_process = subprocess.Popen(api_command, cwd=PROJECT_ROOT)
    print(f"API on http://{options.host}:{options.port} (try /docs); Ctrl-C stops both", flush=True)
    try:
        api_process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for process in (api_process, worker_process):
            if process.poll() is None:
                process.terminate()  # the worker's warm shutdown lets running tasks finish
        for process in (api_process, worker_process):
            try:
                process.wait(60)
            except (KeyboardInterrupt, subprocess.TimeoutExpired):  # a second Ctrl-C
                process.kill()
                process.wait()


if __name__ == "__main__":
    main()
