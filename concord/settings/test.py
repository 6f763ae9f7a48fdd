"""Tests: the same PostgreSQL and Redis as local development, with quick password hashing."""

import os

from .base import *  # noqa: F403

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
CACHES["default"]["KEY_PREFIX"] = "concord-test"  # noqa: F405
# Tests' tasks go to queues of their own, so a `make run` worker on the same Redis never takes them.
CELERY_TASK_DEFAULT_QUEUE = "test-default"
CELERY_TASK_ROUTES = {"training.tasks.*": {"queue": "test-gpu"}}
# Two test runs on one PostgreSQL server (two checkouts, say) each need their own test database.
if os.environ.get("TEST_DATABASE_NAME"):
    DATABASES["default"]["TEST"] = {"NAME": os.environ["TEST_DATABASE_NAME"]}  # noqa: F405
