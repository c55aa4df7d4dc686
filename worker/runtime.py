"""Per-process state of the worker: the settings read from the environment and a Redis client.

Both are made on first use in each process (after Celery's prefork), never shared across a fork.
"""

from __future__ import annotations

import functools
import os

import redis

from bakup.settings import Settings
from notifications.config import NotifySettings


@functools.cache
def _settings_for(pid: int) -> Settings:
    return Settings.from_env(require_database=False)


def settings() -> Settings:
    """Return this process's settings. Raises ConfigError if the environment is invalid."""
    return _settings_for(os.getpid())


@functools.cache
def _notify_for(pid: int) -> NotifySettings:
    return NotifySettings.from_env()


def notify_settings() -> NotifySettings:
    """Return this process's notification settings. Raises ConfigError if invalid."""
    return _notify_for(os.getpid())


@functools.cache
def _redis_for(pid: int) -> redis.Redis:
    return redis.Redis.from_url(settings().require_redis(), socket_timeout=30)


def redis_client() -> redis.Redis:
    """Return this process's Redis client for locks and schedule slots."""
    return _redis_for(os.getpid())
