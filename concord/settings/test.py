"""Tests: the same PostgreSQL and Redis as local development, with quick password hashing."""

import os

from .base import *  # noqa: F403
from .env import env_bool, env_int

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
    # And their own cache keys on the shared Redis (the API's throttle counts, progress): the servers and workers
    # a run starts inherit the variable, so they share the run's keys and no other run's.
    CACHES["default"]["KEY_PREFIX"] = f"concord-test-{os.environ['TEST_DATABASE_NAME']}"  # noqa: F405
# No connection pool unless asked for: tests hold one connection per thread for as long as they like (threads
# racing for the queue, say), which a pool sized for web threads would make wait. tests/test_serving.py asks for
# one in the web server it starts (CONCORD_DB_POOL=1), as `make run` serves.
if not env_bool("CONCORD_DB_POOL", False):
    DATABASES["default"].get("OPTIONS", {}).pop("pool", None)  # noqa: F405
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 60)  # noqa: F405
