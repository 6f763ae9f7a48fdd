"""The training pages as people read them (issue 14): objectives and backbones in words, curves with axes that show
a single point, final metrics as tables, the held-out chart with each model's n and standard error, and what the
worker is doing before the first step."""

import re

import pytest

from annotate.models import Role
from tests.annotate.factories import ProjectFactory, member
from tests.training.conftest import frozen_version
from tests.training.test_runs import list_url, make_model, make_run, run_url, tiny_config
from training.ml.config import OBJECTIVE_LABELS, default_backbone
from training.models import TrainingRun
from training.selectors import run_curve
from training.services import runs as run_services
from training.services.runs import training_run_enqueue, training_run_execute

METRICS = {
    "heldout_pairs": 100,
    "heldout_split": "test",
    "train_loss": 0.4321,
    "steps": 30,
    "length_baseline_accuracy": 0.55,
    "heldout": {
        "count": 100,
        "accuracy": 0.8,
        "tie_rate": 0.0,
        "ece": 0.123,
        "by_source": {"hh-rlhf": {"count": 60, "accuracy": 0.75}, "": {"count": 40, "accuracy": 0.875}},
        "by_strength": {
            "strong": {"count": 30, "accuracy": 0.9},
            "slight": {"count": 50, "accuracy": 0.7},
            "clear": {"count": 20, "accuracy": 0.85},
        },
        "calibration": {"temperature": 1.75, "pairs": 80, "ece": 0.045},
        "attribute_rmse": {"helpfulness": 0.61},
        "attribute_constant_rmse": {"helpfulness": 0.93},
        "ensemble": {"members": 2, "member_accuracy": [0.78, 0.81], "mean_std": 0.2},
    },
}


def table(page: str, testid: str) -> str:
    start = page.index(f'data-testid="{testid}"')
    return page[start : page.index("</table>", start)]


def cells(html: str) -> list[list[str]]:
    """Each row's cells as text, tags dropped."""
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", html, re.S)
    return [
        [" ".join(re.sub(r"<[^>]+>", " ", c).split()) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r, re.S)]
        for r in rows
    ]


@pytest.mark.django_db
def test_the_final_metrics_are_tables_not_python_dicts(login):
    project = ProjectFactory()
    run = make_run(project, frozen_version(project, count=4), status="succeeded", metrics=METRICS)
    page = login(member(project, Role.ADMIN)).get(run_url(run)).content.decode()
    assert "{&#x27;" not in page  # no dict written out
    assert "{'" not in page
    overall = cells(table(page, "metrics-overall"))
    assert ["Held-out accuracy", "0.8000 ± 0.040"] in overall  # sqrt(0.8 * 0.2 / 100)
    assert ["Longer response wins (baseline)", "0.5500"] in overall
    assert ["Held-out pairs", "100"] in overall
    assert cells(table(page, "metrics-by-source"))[1:] == [
        ["hh-rlhf", "60", "0.750 ± 0.056"],
        ["(no source)", "40", "0.875 ± 0.052"],
    ]
    # Weakest first, in words, whatever order the dict has.
    assert cells(table(page, "metrics-by-strength"))[1:] == [
        ["slight (1 of 3)", "50", "0.700 ± 0.065"],
        ["clear (2 of 3)", "20", "0.850 ± 0.080"],
        ["strong (3 of 3)", "30", "0.900 ± 0.055"],
    ]
    calibration = cells(table(page, "metrics-calibration"))
    assert ["Expected calibration error, raw", "0.1230"] in calibration
    assert ["Expected calibration error, calibrated", "0.0450"] in calibration
    assert ["Temperature", "1.750"] in calibration
    assert ["Fitted on", "80 validation pairs"] in calibration
    assert cells(table(page, "metrics-attributes"))[1:] == [["helpfulness", "0.610", "0.930"]]
    assert cells(table(page, "metrics-ensemble"))[1:] == [["1", "0.780"], ["2", "0.810"]]


@pytest.mark.django_db
def test_without_a_test_split_the_calibrated_error_is_not_claimed(login):
    project = ProjectFactory()
    metrics = {**METRICS, "heldout_split": "validation"}
    run = make_run(project, frozen_version(project, count=4), status="succeeded", metrics=metrics)
    page = login(member(project, Role.ADMIN)).get(run_url(run)).content.decode()
    calibration = cells(table(page, "metrics-calibration"))
    assert ["Expected calibration error, calibrated", "not measured: calibrated on these same pairs"] in calibration
    assert "validation split (the version has no test split)" in page


def curve_svg(page: str, chart_id: str) -> str:
    start = page.index(f'id="{chart_id}"')
    return page[start : page.index("</svg>", start)]


@pytest.mark.django_db
def test_a_single_point_curve_shows_as_a_point_on_labelled_axes(login):
    project = ProjectFactory()
    history = [{"step": 10, "loss": 0.69, "eval_accuracy": 0.5}]
    run = make_run(
        project, frozen_version(project, count=4), status="running", step=10, total_steps=40, history=history
    )
    page = login(member(project, Role.ADMIN)).get(run_url(run)).content.decode()
    loss = curve_svg(page, "loss-curve")
    # In the middle across (one step) and up (a flat range around its value).
    assert re.findall(r'<circle class="curve-dot" cx="(\d+)" cy="(\d+)"', loss) == [("300", "80")]
    assert re.findall(r'class="axis-name"[^>]*>([^<]+)<', loss) == ["step", "loss"]
    assert re.findall(r'<text class="tick"[^>]*>([^<]+)<', loss) == ["0.621", "0.69", "0.759", "10"]
    accuracy = curve_svg(page, "accuracy-curve")
    assert re.findall(r'<circle class="curve-dot" cx="(\d+)" cy="(\d+)"', accuracy) == [("300", "80")]  # 0.5 of 0..1
    assert re.findall(r'<text class="tick"[^>]*>([^<]+)<', accuracy) == ["0", "0.5", "1", "10"]


def test_a_curve_s_ticks_run_from_its_first_to_its_last_step():
    curve = run_curve([{"step": s, "loss": 2.0 - s / 10} for s in (10, 15, 20)], "loss")
    assert [(t.at, t.label) for t in curve.x_ticks] == [(0, "10"), (300, "15"), (600, "20")]
    assert [(t.at, t.label) for t in curve.y_ticks] == [(160, "0"), (80, "0.5"), (0, "1")]
    assert curve.dots == curve.points == [(0, 0), (300, 80), (600, 160)]
    long = run_curve([{"step": s, "loss": float(s)} for s in range(100)], "loss")
    assert long.dots == []  # many points: a line only


@pytest.mark.django_db
def test_the_held_out_chart_shows_each_model_s_n_and_standard_error(login):
    project = ProjectFactory()
    version = frozen_version(project, count=4)
    cards = [
        {"config": {"objective": "bt_margin"}, "metrics": {"heldout": {"accuracy": 0.8, "count": 100}}},
        {"config": {"objective": "bt"}, "metrics": {"heldout": {"accuracy": 0.5}, "heldout_pairs": 25}},
    ]
    models = [make_model(make_run(project, version, status="succeeded"), model_card=card) for card in cards]
    page = login(member(project, Role.ADMIN)).get(list_url(project)).content.decode()
    chart = curve_svg(page, "heldout-chart")
    groups = dict(
        re.findall(r'data-model="(\d+)">(.*?)</g>\s*(?=<g transform|<line class="axis" x1="350")', chart, re.S)
    )
    first, second = groups[str(models[0].pk)], groups[str(models[1].pk)]
    assert "0.800 ± 0.040 · n=100" in first  # sqrt(0.8 * 0.2 / 100)
    # The whisker spans 0.76 to 0.84 of the 400 pixels after the 150 of the label.
    assert re.search(r'<g class="whisker"><line x1="454" x2="486"', first)
    assert "0.500 ± 0.100 · n=25" in second  # n from the run's held-out pairs: sqrt(0.25 / 25)
    assert re.search(r'<g class="whisker"><line x1="310" x2="390"', second)
    assert [t for t in re.findall(r'<text class="tick"[^>]*>([^<]+)<', chart) if t[0].isdigit()] == [
        "0",
        "0.25",
        "0.5",
        "0.75",
        "1",
    ]
    rows = cells(table(page, "models"))
    assert rows[1][1:] == ["Bradley-Terry", "0.500", "0.100", "25"]
    assert rows[2][1:] == ["Bradley-Terry with a margin", "0.800", "0.040", "100"]


@pytest.mark.django_db
def test_the_form_names_objectives_and_backbones_in_words(login, tiny_backbone):
    project = ProjectFactory()
    frozen_version(project, count=4)
    page = login(member(project, Role.ADMIN)).get(list_url(project)).content.decode()
    form = page[page.index('id="retrain"') :]
    for name, (label, line) in OBJECTIVE_LABELS.items():
        assert re.search(rf'value="{name}"[^>]*>\s*{re.escape(label)}: {re.escape(line)}', form.replace("&#x27;", "'"))
    assert f'<option value="{default_backbone()}" selected>all-MiniLM-L6-v2 (the packaged default)</option>' in form
    assert f'<option value="{tiny_backbone}">bert, on the server ({tiny_backbone.parent})</option>' in form


@pytest.mark.django_db
def test_before_its_first_step_a_run_says_what_its_worker_is_doing(login):
    project = ProjectFactory()
    version = frozen_version(project, count=4)
    running = make_run(project, version, status="running", phase="tokenising 900 pairs")
    queued = make_run(project, version)
    admin = login(member(project, Role.ADMIN))
    live = admin.get(run_url(running), HTTP_HX_REQUEST="true").content.decode()
    assert re.search(r'id="run-phase"[^>]*>Now: <strong>tokenising 900 pairs</strong>', live)
    assert "of ?" not in live
    assert 'id="run-phase" class="phase">Waiting for a gpu worker' in admin.get(run_url(queued)).content.decode()
    runs = admin.get(list_url(project), HTTP_HX_REQUEST="true").content.decode()
    row = runs[runs.index(f'id="run-{running.pk}"') :]
    assert '<span class="phase">tokenising 900 pairs…</span>' in row[: row.index("</tr>")]
    TrainingRun.objects.filter(pk=running.pk).update(phase="<b>x</b>")
    assert "&lt;b&gt;x&lt;/b&gt;" in admin.get(run_url(running)).content.decode()  # escaped
    TrainingRun.objects.filter(pk=running.pk).update(status="succeeded")
    assert 'id="run-phase"' not in admin.get(run_url(running)).content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_worker_writes_its_phases_to_the_run_in_order(settings, tmp_path, tiny_backbone, monkeypatch, sent_jobs):
    settings.TRAINING_ROOT = tmp_path / "training"
    project = ProjectFactory()
    version = frozen_version(project, count=12)
    run = training_run_enqueue(project=project, version=version, config=tiny_config(tiny_backbone), created_by=None)
    seen: list[tuple[str, str, int]] = []
    write = run_services.run_phase

    def spy(run: TrainingRun, message: str) -> None:
        write(run, message)
        row = TrainingRun.objects.get(pk=run.pk)
        seen.append((message, row.phase, row.step))

    monkeypatch.setattr(run_services, "run_phase", spy)
    run = training_run_execute(run=run)
    assert run.status == "succeeded", (run.error, run.log)
    counts = re.search(r"(\d+) train, (\d+) validation, (\d+) held-out pairs", run.log)
    assert counts is not None
    train, validation, heldout = map(int, counts.groups())
    assert [message for message, _, _ in seen] == [
        f"exporting the pairs of {version.name}",
        f"loading the model ({tiny_backbone.name})",
        f"tokenising {train} pairs",
        "training",
        f"evaluating on {validation} validation pairs",
        f"evaluating on {heldout} held-out pairs",
    ]
    assert all(phase == message for message, phase, _ in seen)  # each on the run's row as it is said
    assert [step for _, _, step in seen][:4] == [0, 0, 0, 0]  # before the first step
    assert seen[-1][2] == run.total_steps
    assert run.log.index("tokenising") < run.log.index("trained ")
