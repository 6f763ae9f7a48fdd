"""PostgreSQL advisory locks for jobs that run longer than one transaction.

A job (a freeze, an export) writes in many short transactions, so a row lock cannot mark it as taken. A
session-level advisory lock can: it is held by the worker's database connection for as long as the job runs,
and PostgreSQL drops it the moment that connection dies with its worker. Holding the lock therefore means
"nobody else is running this job", even when the job's row still says RUNNING from a worker that was killed.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection

# First key of the two-key lock: one namespace per kind of job, so ids of different tables never collide.
FREEZE = 1
EXPORT = 2
TRAINING = 3
SCORING = 4
CAMPAIGN_ROUND = 5
REVIEW_SYNC = 6  # by project id
SELECTION = 7
# By project id, held to the end of a transaction (pg_advisory_xact_lock) that numbers new items: Item.number is
# the project's largest number plus one, read under this lock. Migration annotate 0011's trigger has it as 8.
ITEM_NUMBERS = 8
SCORING_CHUNK = 9  # by chunk id (training.models.ScoringChunk): a scoring job's chunks run on many workers


@contextmanager
def job_lock(namespace: int, job_id: int) -> Iterator[bool]:
    """Try to take the job's lock without waiting; yields whether it was taken, and releases it after."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [namespace, job_id])
        taken = bool(cursor.fetchone()[0])
    try:
        yield taken
    finally:
        if taken:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [namespace, job_id])
