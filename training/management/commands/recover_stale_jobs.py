"""Run the watchdog once: `manage.py recover_stale_jobs`, for ops, or from cron where no Celery beat runs."""

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from training.services.recovery import stale_jobs_recover


class Command(BaseCommand):
    help = (
        "Send running training runs and scoring jobs whose worker died to the gpu queue again, or mark them "
        "failed after CONCORD_MAX_RECOVERIES re-sends. Jobs on a live worker are never touched."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--grace",
            type=int,
            default=None,
            metavar="SECONDS",
            help="Leave jobs heard from within this many seconds alone (default: CONCORD_RECOVERY_GRACE_S).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        grace = timedelta(seconds=options["grace"]) if options["grace"] is not None else None
        recoveries = stale_jobs_recover(grace=grace)
        for recovery in recoveries:
            self.stdout.write(str(recovery))
        if not recoveries:
            self.stdout.write("No job has lost its worker.")
