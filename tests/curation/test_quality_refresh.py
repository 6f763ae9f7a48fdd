"""The annotators page reads statistics a worker computed and cached per project (ProjectQuality): through HTTP,
the page asks for them, polls while they are computed, shows them with their age, refreshes on a curator's click
or when stale; and the refresh service is safe to run twice, records failures and follows a late request."""

import re
from datetime import timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from django.db import connections
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotate.models import Membership, Role
from concord.celery import app as celery_app
from curation.models import ProjectQuality
from curation.services import quality as quality_service
from curation.services.quality import QUALITY_REFRESH, project_quality_request
from curation.tasks import project_quality_refresh_run
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, member
from tests.curation.figures import run_sent
from tests.jobs import private_queue
from tests.waits import HANG_GUARD_S, wait_for


def page_url(project) -> str:  # type: ignore[no-untyped-def]
    return reverse("curation:annotator_quality", args=[project.pk])


def refresh_url(project) -> str:  # type: ignore[no-untyped-def]
    return reverse("curation:quality_refresh", args=[project.pk])


def labelled(project, annotators, items: int):  # type: ignore[no-untyped-def]
    """`items` items, each labelled +1 by every annotator."""
    for _ in range(items):
        item = ItemFactory(project=project)
        for annotator in annotators:
            AnnotationFactory(item=item, annotator=annotator, strength=1, seconds_spent=20.0)


def age(project, minutes: int) -> None:  # type: ignore[no-untyped-def]
    """Make the project's cached figures, and its last request, `minutes` older."""
    quality = ProjectQuality.objects.get(project=project)
    back = timedelta(minutes=minutes)
    ProjectQuality.objects.filter(pk=quality.pk).update(
        requested_at=quality.requested_at - back,
        computed_at=quality.computed_at - back if quality.computed_at else None,
        checked_at=quality.checked_at - back if quality.checked_at else None,
    )


@pytest.fixture
def project():  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=2)
    labelled(project, [member(project, username="ann"), member(project, username="bob")], items=3)
    return project


@pytest.mark.django_db
def test_with_nothing_cached_the_page_says_it_is_computing_and_asks_a_worker_once(get, project, sent_jobs) -> None:  # type: ignore[no-untyped-def]
    html = get(page_url(project)).content.decode()
    assert "No figures yet: a worker is computing them" in html
    assert "waiting for a worker" in html
    assert f'hx-get="{page_url(project)}?shown="' in html
    assert 'hx-trigger="every 2s"' in html
    # The annotators, with their pause and weight forms, are listed already.
    assert 'aria-label="Weight of ann"' in html
    assert 'aria-label="Weight of bob"' in html
    assert 'data-testid="project-agreement"' not in html
    quality = ProjectQuality.objects.get(project=project)
    assert (quality.status, quality.report, quality.steps) == ("queued", None, 5)
    assert sent_jobs == [(QUALITY_REFRESH, quality.pk)]
    get(page_url(project))
    assert len(sent_jobs) == 1, "a second view while it is on its way asks nothing more"


@pytest.mark.django_db
def test_after_the_worker_ran_the_page_shows_the_figures_and_their_age(get, project, sent_jobs) -> None:  # type: ignore[no-untyped-def]
    get(page_url(project))
    assert run_sent(sent_jobs) == 1
    quality = ProjectQuality.objects.get(project=project)
    assert (quality.status, quality.annotation_count, quality.step) == ("done", 6, 5)
    assert quality.compute_seconds > 0
    html = get(page_url(project)).content.decode()
    assert re.search(r'data-testid="quality-age">0\xa0minutes ago<', html)
    assert 'data-testid="quality-labels">6<' in html
    assert 'data-testid="project-agreement"' in html
    assert "No figures yet" not in html
    assert "hx-get" not in html, "nothing to poll for"
    assert sent_jobs == [], "fresh figures: nothing asked"
    age(project, minutes=3)
    assert re.search(r'data-testid="quality-age">3\xa0minutes ago<', get(page_url(project)).content.decode())


@pytest.mark.django_db
def test_the_page_shows_the_step_a_worker_is_at(get, project) -> None:  # type: ignore[no-untyped-def]
    get(page_url(project))
    ProjectQuality.objects.filter(project=project).update(
        status="running", step=3, step_name="Dawid-Skene", heard_at=timezone.now()
    )
    html = get(page_url(project)).content.decode()
    assert "step 3 of 5, Dawid-Skene" in html
    assert 'aria-valuenow="40"' in html


@pytest.mark.django_db
def test_polling_answers_the_status_until_done_then_stops_and_reloads_for_new_figures(get, project, sent_jobs) -> None:  # type: ignore[no-untyped-def]
    get(page_url(project))
    poll = get(f"{page_url(project)}?shown=", HTTP_HX_REQUEST="true")
    assert poll.status_code == 200
    assert 'id="quality-status"' in poll.content.decode()
    assert "<html" not in poll.content.decode()
    run_sent(sent_jobs)
    done = get(f"{page_url(project)}?shown=", HTTP_HX_REQUEST="true")
    assert done.status_code == 286
    assert done["HX-Refresh"] == "true", "figures newer than the page shows: reload it"
    shown = str(round(ProjectQuality.objects.get(project=project).computed_at.timestamp() * 1_000_000))
    same = get(f"{page_url(project)}?shown={shown}", HTTP_HX_REQUEST="true")
    assert same.status_code == 286
    assert "HX-Refresh" not in same, "the page already shows these figures"


@pytest.mark.django_db
def test_the_refresh_button_computes_the_figures_again(get, curator, project, sent_jobs) -> None:  # type: ignore[no-untyped-def]
    get(page_url(project))
    run_sent(sent_jobs)
    labelled(project, [member(project), member(project)], items=2)
    assert 'data-testid="quality-labels">6<' in get(page_url(project)).content.decode(), "fresh: not asked again"
    assert sent_jobs == []
    html = get(page_url(project)).content.decode()
    assert f'action="{refresh_url(project)}"' in html
    response = curator.post(refresh_url(project))
    assert response.status_code == 302
    assert response["Location"] == page_url(project)
    # The POST's transaction is the test's: send what it asked for as its commit would.
    quality = ProjectQuality.objects.get(project=project)
    assert (quality.status, quality.force) == ("queued", True)
    project_quality_refresh_run(quality.pk)
    html = get(page_url(project)).content.decode()
    assert 'data-testid="quality-labels">10<' in html
    assert "A worker is computing the statistics again" in html


@pytest.mark.django_db
def test_the_refresh_button_needs_the_csrf_token(project) -> None:  # type: ignore[no-untyped-def]
    client = Client(enforce_csrf_checks=True)
    client.force_login(member(project, Role.CURATOR))
    assert client.post(refresh_url(project)).status_code == 403
    assert not ProjectQuality.objects.filter(project=project).exists()
    html = client.get(page_url(project)).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert token is not None
    assert client.post(refresh_url(project), {"csrfmiddlewaretoken": token.group(1)}).status_code == 302


@pytest.mark.django_db
def test_only_the_projects_curators_reach_the_page_and_the_button(login, project) -> None:  # type: ignore[no-untyped-def]
    annotator = login(Membership.objects.filter(project=project, role=Role.ANNOTATOR).first().user)
    assert annotator.get(page_url(project)).status_code == 403
    assert annotator.post(refresh_url(project)).status_code == 403
    stranger = login(member(ProjectFactory(), Role.ADMIN))
    assert stranger.get(page_url(project)).status_code == 404
    assert stranger.post(refresh_url(project)).status_code == 404
    assert login(member(project, Role.CURATOR)).get(refresh_url(project)).status_code == 405
    assert not ProjectQuality.objects.filter(project=project).exists(), "nothing asked for by them"


@pytest.mark.django_db
def test_stale_figures_are_checked_again_and_kept_when_no_label_changed(get, project, sent_jobs) -> None:  # type: ignore[no-untyped-def]
    get(page_url(project))
    run_sent(sent_jobs)
    computed_at = ProjectQuality.objects.get(project=project).computed_at
    age(project, minutes=10)
    html = get(page_url(project)).content.decode()
    assert "Refreshing on a worker" in html
    assert 'data-testid="project-agreement"' in html, "the old figures stay while it refreshes"
    assert run_sent(sent_jobs) == 1
    quality = ProjectQuality.objects.get(project=project)
    assert quality.computed_at == computed_at - timedelta(minutes=10), "unchanged labels: not computed again"
    assert quality.checked_at > quality.computed_at
    assert "no label had changed" in get(page_url(project)).content.decode()


@pytest.mark.django_db
def test_stale_figures_are_computed_again_when_labels_changed(get, project, sent_jobs) -> None:  # type: ignore[no-untyped-def]
    get(page_url(project))
    run_sent(sent_jobs)
    labelled(project, [member(project), member(project)], items=1)
    age(project, minutes=10)
    get(page_url(project))
    run_sent(sent_jobs)
    assert ProjectQuality.objects.get(project=project).annotation_count == 8
    assert 'data-testid="quality-labels">8<' in get(page_url(project)).content.decode()


@pytest.mark.django_db
def test_the_page_reads_a_fixed_number_of_rows_whatever_the_annotations(
    get, project, sent_jobs, django_assert_max_num_queries
) -> None:  # type: ignore[no-untyped-def]
    get(page_url(project))
    run_sent(sent_jobs)
    with django_assert_max_num_queries(9) as first:
        get(page_url(project))
    labelled(project, [member(project) for _ in range(3)], items=20)
    with django_assert_max_num_queries(len(first.captured_queries)):
        html = get(page_url(project)).content.decode()
    for query in first.captured_queries:
        assert "annotate_annotation" not in query["sql"], "the page never reads the annotations"
    assert html.count("<tr") > 5  # the new annotators are listed (without figures until the next refresh)


@pytest.mark.django_db
def test_pause_and_weight_show_as_they_are_now_and_a_weight_asks_for_new_figures(
    get, curator, project, sent_jobs, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    get(page_url(project))
    run_sent(sent_jobs)
    membership = Membership.objects.get(project=project, user__username="ann")
    with django_capture_on_commit_callbacks(execute=True):
        curator.post(reverse("curation:member_pause", args=[project.pk, membership.pk]), {"paused": "1"})
        curator.post(reverse("curation:member_weight", args=[project.pk, membership.pk]), {"weight": "0.3"})
    html = get(page_url(project)).content.decode()
    assert 'value="0.30" aria-label="Weight of ann"' in html
    assert '<span class="badge">paused</span>' in html
    assert sent_jobs == [(QUALITY_REFRESH, ProjectQuality.objects.get(project=project).pk)]
    run_sent(sent_jobs)
    assert ProjectQuality.objects.get(project=project).status == "done"


@pytest.mark.django_db
def test_a_refresh_runs_once_however_often_its_task_is_delivered(
    project, sent_jobs, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        quality = project_quality_request(project=project)
    project_quality_refresh_run(quality.pk)
    first = ProjectQuality.objects.get(pk=quality.pk)
    project_quality_refresh_run(quality.pk)  # redelivered: nothing queued to claim
    project_quality_refresh_run(quality.pk + 1000)  # a row that is not there
    assert ProjectQuality.objects.get(pk=quality.pk).computed_at == first.computed_at


@pytest.mark.django_db
def test_a_failed_refresh_is_shown_and_asked_again_later(get, project, sent_jobs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def broken(**_: object) -> None:
        raise RuntimeError("out of memory")

    working = quality_service.quality_report
    monkeypatch.setattr(quality_service, "quality_report", broken)
    get(page_url(project))
    run_sent(sent_jobs)
    quality = ProjectQuality.objects.get(project=project)
    assert (quality.status, quality.error) == ("failed", "RuntimeError: out of memory")
    html = get(page_url(project)).content.decode()
    assert "The last refresh failed: RuntimeError: out of memory" in html
    assert sent_jobs == [], "not asked again on every view"
    monkeypatch.setattr(quality_service, "quality_report", working)
    age(project, minutes=10)
    get(page_url(project))
    run_sent(sent_jobs)
    assert ProjectQuality.objects.get(project=project).status == "done"


@pytest.mark.django_db
def test_a_refresh_lost_with_its_worker_is_asked_for_again(get, project, sent_jobs) -> None:  # type: ignore[no-untyped-def]
    get(page_url(project))
    sent_jobs.clear()  # the message went with its worker
    long_ago = timezone.now() - quality_service.LOST_AFTER - timedelta(minutes=1)
    ProjectQuality.objects.filter(project=project).update(status="running", heard_at=long_ago, started_at=long_ago)
    get(page_url(project))
    assert run_sent(sent_jobs) == 1
    assert ProjectQuality.objects.get(project=project).status == "done"


@pytest.mark.django_db
def test_a_refresh_asked_for_while_one_runs_follows_it(
    project, sent_jobs, monkeypatch, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        quality = project_quality_request(project=project)
    real_report = quality_service.quality_report

    def report_asked_again_meanwhile(**kwargs):  # type: ignore[no-untyped-def]
        with django_capture_on_commit_callbacks(execute=True):
            project_quality_request(project=project, force=True)
        return real_report(**kwargs)

    monkeypatch.setattr(quality_service, "quality_report", report_asked_again_meanwhile)
    with django_capture_on_commit_callbacks(execute=True):
        project_quality_refresh_run(quality.pk)
    assert ProjectQuality.objects.get(pk=quality.pk).computed_at is not None
    assert sent_jobs == [(QUALITY_REFRESH, quality.pk), (QUALITY_REFRESH, quality.pk)], "the first, then one more"
    followed = ProjectQuality.objects.get(pk=quality.pk)
    assert (followed.status, followed.force, followed.again) == ("queued", True, False)


@pytest.fixture
def worker_closes_connections():  # type: ignore[no-untyped-def]
    """The worker runs tasks in a thread of this process; its connection must close with each task, or the test
    database cannot be dropped at the end of the run."""
    from celery.signals import task_postrun

    def close(**_: object) -> None:
        connections.close_all()

    task_postrun.connect(close, weak=False)
    yield
    task_postrun.disconnect(close)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker_closes_connections")
def test_a_real_worker_computes_what_the_page_asked_for(login, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=2)
    labelled(project, [member(project, username="ann"), member(project, username="bob")], items=3)
    client = login(member(project, Role.CURATOR))
    queue = private_queue(monkeypatch, QUALITY_REFRESH)
    with start_worker(celery_app, perform_ping_check=False, queues=[queue], shutdown_timeout=HANG_GUARD_S):
        assert "No figures yet" in client.get(page_url(project)).content.decode()
        assert wait_for(lambda: ProjectQuality.objects.get(project=project).status in ("done", "failed"))
    quality = ProjectQuality.objects.get(project=project)
    assert quality.status == "done", quality.error
    html = client.get(page_url(project)).content.decode()
    assert 'data-testid="quality-labels">6<' in html
    assert 'data-testid="project-agreement"' in html
