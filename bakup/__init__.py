"""bakup: scheduled, verified and monitored backups of PostgreSQL databases."""

__version__ = "0.1.0"
