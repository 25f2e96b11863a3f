"""Background worker for the web platform: settings, database, domain logic, Celery app."""
