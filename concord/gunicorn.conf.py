"""Gunicorn's configuration: how `make run` (the Procfile's `web:`) and production serve concord.wsgi.

    gunicorn -c concord/gunicorn.conf.py concord.wsgi

Threaded workers (gthread): a few processes for the cores, each with a few threads that overlap their database
waits. Each thread holds at most one database connection, taken from its process's psycopg pool
(concord.settings.base), so the server never holds more than workers x threads connections however many clients
come and go: a client that disconnects early hands its thread's connection back with the request's end. Every
value can be overridden from the environment; gunicorn's own command-line flags win over this file.
"""

import os

# Not concord.settings.env: importing the concord package here would load the Celery app into the master and set
# DJANGO_SETTINGS_MODULE's default for the workers.


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"Environment variable {name}={raw!r} is not an integer") from None


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


_cores = os.cpu_count() or 1

bind = f"{env_str('CONCORD_HOST', '127.0.0.1')}:{env_int('CONCORD_PORT', 8000)}"
worker_class = "gthread"
# Processes for the cores (the usual 2 x cores + 1), capped so a big machine does not take every connection
# PostgreSQL allows (200 in the private cluster): workers x threads of them at most.
workers = env_int("CONCORD_WEB_WORKERS", min(2 * _cores + 1, 12))
threads = env_int("CONCORD_WEB_THREADS", 4)
# The pool of each worker has one connection per thread (concord.settings.base reads this); exported here so the
# workers, which import the settings after this file has run, size their pools from the same number.
os.environ["CONCORD_WEB_THREADS"] = str(threads)
# Many clients wait in the listen queue rather than being refused.
backlog = env_int("CONCORD_WEB_BACKLOG", 2048)
# A gthread worker's main loop keeps beating while its threads serve slow pages: this only restarts a worker that
# hangs as a whole.
timeout = env_int("CONCORD_WEB_TIMEOUT", 120)
graceful_timeout = env_int("CONCORD_WEB_GRACEFUL_TIMEOUT", 30)
keepalive = env_int("CONCORD_WEB_KEEPALIVE", 5)
# Restart the workers when a source file changes (as runserver did), for development: CONCORD_WEB_RELOAD=1.
reload = os.environ.get("CONCORD_WEB_RELOAD", "") in {"1", "true", "yes", "on"}
# A worker restarts now and then so that memory a request grew does not stay with it forever.
max_requests = env_int("CONCORD_WEB_MAX_REQUESTS", 5000)
max_requests_jitter = max_requests // 10
# No control socket (gunicorn 24+ opens one at ~/.gunicorn/gunicorn.ctl by default): two servers on one machine,
# a test's and `make run`'s, would fight over the one path; nothing here uses it.
control_socket_disable = True
# The heartbeat file in memory, not on a disk that may stall.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 (gunicorn's advice)

# One line per request on stdout (CONCORD_ACCESS_LOG: a file, or empty for none), ending with the time the server
# spent on it in microseconds (%(D)s), from the request's start in its thread to the response's end: without the
# time it waited for a thread, which bench/http_load.py reads to tell the server's share from the client's.
accesslog = env_str("CONCORD_ACCESS_LOG", "-") or None
access_log_format = '%(h)s %(t)s "%(r)s" %(s)s %(b)s %(D)s'
errorlog = "-"
loglevel = env_str("LOG_LEVEL", "INFO").lower()
# Behind a proxy on this machine, trust its X-Forwarded-* headers (production sets SECURE_PROXY_SSL_HEADER).
forwarded_allow_ips = env_str("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
