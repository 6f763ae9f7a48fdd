"""Helpers of the tests of the pages whose figures a worker computes (the annotators page and the dashboard)."""

from curation.services.quality import QUALITY_REFRESH
from curation.tasks import project_quality_refresh_run


def run_sent(sent_jobs) -> int:  # type: ignore[no-untyped-def]
    """Run, as a worker would, every refresh task sent so far; returns how many ran."""
    ran = 0
    while sent_jobs:
        name, quality_id = sent_jobs.pop(0)
        assert name == QUALITY_REFRESH
        project_quality_refresh_run(quality_id)
        ran += 1
    return ran
