"""The scheduled service: a Celery app whose beat fires backups, and whose worker runs them,
then verifies and prunes. The tasks are thin: the work is done by ``bakup.actions``."""
