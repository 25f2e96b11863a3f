"""Domain functions: plain SQL work on a Session; never imports Celery."""
