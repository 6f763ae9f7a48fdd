"""A world for the security suites: two projects, each with every kind of object a URL can name (items,
annotations, an import, a frozen version with a finished export, a training run with its model, a campaign with a
round and a decision) and a member in every role, plus users who straddle them. The text of every user- or
model-controlled field comes from `text`, so the XSS suite fills them with payloads and the access matrix with
plain words.

Also here: a fingerprint of the database (to prove a refused request wrote nothing) and test clients that send a
valid CSRF token (so CSRF is never what refuses a request)."""

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.middleware.csrf import CSRF_ALLOWED_CHARS, CSRF_SECRET_LENGTH
from django.test import Client
from django.utils import timezone
from django.utils.crypto import get_random_string
from rest_framework.authtoken.models import Token

from annotate.models import Assignment, GoldAnswer, ImportBatch, Item, LabelSchema, Membership, Project, Role
from annotate.rules import Pool
from curation.models import Adjudication, DatasetVersion, ExportJob, ItemFlag
from curation.services.version_exports import export_job_create, export_job_run
from curation.services.versions import dataset_version_create, dataset_version_freeze
from tests.annotate.factories import AnnotationFactory, ItemFactory, MembershipFactory, ProjectFactory, UserFactory
from training.ml.synergy import CampaignSettings
from training.models import (
    Campaign,
    CampaignRound,
    DecisionOverride,
    PairDecision,
    RewardModel,
    ScoringJob,
    TrainingRun,
)

# (what the field is, the most characters it may hold) -> its text.
Text = Callable[[str, int], str]
ROLES = (Role.ANNOTATOR, Role.CURATOR, Role.ADMIN)
LONG = 20_000  # a text field without a limit of its own


def plain_text(what: str, max_chars: int) -> str:
    return what[:max_chars]


@dataclass
class ProjectWorld:
    """One project and one object of each kind a URL can name, all of this project."""

    project: Project
    members: dict[str, AbstractBaseUser]
    memberships: dict[str, Membership]
    item: Item  # leased to the annotator, labelled by the curator and the admin
    items: list[Item]
    batch: ImportBatch
    version: DatasetVersion
    job: ExportJob
    run: TrainingRun
    model: RewardModel
    campaign: Campaign
    round: CampaignRound
    decision: PairDecision


@dataclass
class World:
    p1: ProjectWorld
    p2: ProjectWorld
    joint_version: DatasetVersion  # drawn from both projects
    joint_job: ExportJob
    outsider: AbstractBaseUser  # a member of nothing
    cross: AbstractBaseUser  # annotator in P1, curator in P2 (issue 12, item 2)
    both_admin: AbstractBaseUser  # admin of both projects
    tokens: dict[int, str] = field(default_factory=dict)  # user id -> API token


def fine_grained_schema(text: Text) -> dict[str, Any]:
    """A schema asking for everything (ratings, spans, missing information, corrections), its descriptions
    from `text`; names and colours must match the schema's patterns, so they stay plain."""
    return {
        "preference": {"enabled": True, "scale": "seven", "justification": "optional", "justification_min_chars": 0},
        "attributes": [{"name": "helpfulness", "description": text("attribute description", 500), "min": 0, "max": 4}],
        "spans": {
            "enabled": True,
            "categories": [
                {"name": "irrelevant", "color": "#f4a261", "description": text("span category description", 500)}
            ],
            "missing": [{"name": "missing_major", "description": text("missing kind description", 500)}],
        },
        "correction": {"enabled": True},
    }


def _user(text: Text, what: str) -> AbstractBaseUser:
    # Imported annotators get usernames from the file ("imported:<name>"), so a username is model-controlled text.
    user: AbstractBaseUser = UserFactory(username=f"{text('username', 120)} {what}")
    return user


def _item(**fields: Any) -> Item:
    """An item; its content hash unique whatever its text (the same payloads may fill several items)."""
    item: Item = ItemFactory(content_hash=uuid.uuid4().hex, **fields)
    return item


def _labelled_item(text: Text, project: Project, schema: LabelSchema, annotators: list[AbstractBaseUser]) -> Item:
    """An item with agreeing annotations by `annotators`, each carrying every kind of fine-grained label."""
    response_a = text("response a", LONG)
    item = _item(
        project=project,
        prompt=[{"role": "user", "content": text("prompt", LONG)}],
        context=text("context", LONG),
        response_a=response_a,
        response_b=text("response b", LONG),
        source=text("item source", 200),
        external_id=text("external id", 200),
    )
    for annotator in annotators:
        AnnotationFactory(
            item=item,
            annotator=annotator,
            schema=schema,
            strength=2,
            justification=text("justification", LONG),
            ratings={"a": {"helpfulness": 1}, "b": {"helpfulness": 3}},
            spans=[{"response": "a", "start": 0, "end": len(response_a), "category": "irrelevant", "text": response_a}],
            missing=[{"response": "a", "category": "missing_major"}],
            corrections={"a": text("correction", LONG)},
        )
    return item


def _members(text: Text, project: Project, prefix: str) -> tuple[dict[str, Any], dict[str, Membership]]:
    memberships = {
        role: MembershipFactory(project=project, role=role, user=_user(text, f"{prefix}-{role}")) for role in ROLES
    }
    return {role: m.user for role, m in memberships.items()}, memberships


def _items(text: Text, project: Project, members: dict[str, Any]) -> tuple[Item, list[Item]]:
    schema = LabelSchema.objects.get(project=project)
    labellers = [members[Role.CURATOR], members[Role.ADMIN]]
    items = [_labelled_item(text, project, schema, labellers) for _ in range(3)]
    # The annotator's own work, for the pages about annotators.
    own = _labelled_item(text, project, schema, [members[Role.ANNOTATOR]])
    now = timezone.now()
    leased = items[0]
    Assignment.objects.create(
        item=leased,
        annotator=members[Role.ANNOTATOR],
        leased_at=now,
        expires_at=now + timedelta(minutes=project.lease_minutes),
    )
    ItemFlag.objects.create(item=leased, raised_by=members[Role.ANNOTATOR], reason=text("flag reason", 500))
    Adjudication.objects.create(
        item=own, curator=members[Role.CURATOR], decision=Adjudication.Decision.MORE, reason=text("adjudication", LONG)
    )
    gold = _item(project=project, is_gold=True, prompt=[{"role": "user", "content": text("gold prompt", LONG)}])
    GoldAnswer.objects.create(
        item=gold, preference_sign=1, note=text("gold note", LONG), created_by=members[Role.ADMIN]
    )
    return leased, [*items, own, gold]


def _version(text: Text, projects: list[Project], by: AbstractBaseUser) -> tuple[DatasetVersion, ExportJob]:
    """A frozen version of the projects with a finished export (its file written by the export itself)."""
    version = dataset_version_create(name=text("version name", 200), projects=projects, filters={}, created_by=by)
    version = dataset_version_freeze(version=version)
    job = export_job_run(job=export_job_create(version=version, format=ExportJob.Format.TRL, created_by=by))
    assert job.status == ExportJob.Status.DONE, job.error
    assert job.file
    return version, job


def _training(text: Text, project: Project, version: DatasetVersion, by: AbstractBaseUser) -> RewardModel:
    run = TrainingRun.objects.create(
        project=project,
        dataset_version=version,
        config={"backbone": text("backbone", 400), "objective": "bt", "epochs": 1, "batch_size": 4},
        status=TrainingRun.Status.SUCCEEDED,
        error=text("run error", LONG),
        log=text("run log", LONG),
        created_by=by,
        metrics={"heldout_pairs": 3, "steps": 1},
    )
    model = RewardModel.objects.create(project=project, run=run, path=text("model path", 500), model_card={})
    ScoringJob.objects.create(
        project=project,
        reward_model=model,
        dataset_version=version,
        status=ScoringJob.Status.FAILED,
        error=text("scoring error", LONG),
        created_by=by,
    )
    return model


def _campaign(text: Text, world: dict[str, Any], silver: Item) -> tuple[Campaign, CampaignRound, PairDecision]:
    members = world["members"]
    campaign = Campaign.objects.create(
        project=world["project"],
        name=text("campaign name", 200),
        config=CampaignSettings().to_dict(),
        created_by=members[Role.ADMIN],
    )
    round_ = CampaignRound.objects.create(
        campaign=campaign,
        number=1,
        stage=CampaignRound.Stage.LABEL,
        status=CampaignRound.Status.WAITING,
        message=text("round message", 500),
        error=text("round error", LONG),
        closed_by=members[Role.CURATOR],
    )
    decision = PairDecision.objects.create(
        round=round_,
        item=silver,
        pool=Pool.SILVER,
        label_sign=1,
        decision="flip",
        strength=-1.5,
        spread=0.1,
        p_agree=0.2,
    )
    DecisionOverride.objects.create(
        pair_decision=decision, curator=members[Role.CURATOR], decision="accept", reason=text("override reason", LONG)
    )
    return campaign, round_, decision


def project_world(text: Text, prefix: str) -> ProjectWorld:
    project = ProjectFactory(
        name=f"{text('project name', 180)} {prefix}",
        guidelines=text("guidelines", LONG),
        schema=fine_grained_schema(text),
    )
    members, memberships = _members(text, project, prefix)
    item, items = _items(text, project, members)
    batch = ImportBatch.objects.create(
        project=project,
        created_by=members[Role.ADMIN],
        file_name=text("import file name", 255),
        format="jsonl",
        seed=1,
        status=ImportBatch.Status.FAILED,
        error=text("import error", LONG),
    )
    version, job = _version(text, [project], members[Role.CURATOR])
    model = _training(text, project, version, members[Role.ADMIN])
    silver = _item(project=project, source_label=1, prompt=[{"role": "user", "content": text("silver", LONG)}])
    campaign, round_, decision = _campaign(text, {"project": project, "members": members}, silver)
    return ProjectWorld(
        project=project,
        members=members,
        memberships=memberships,
        item=item,
        items=[*items, silver],
        batch=batch,
        version=version,
        job=job,
        run=model.run,
        model=model,
        campaign=campaign,
        round=round_,
        decision=decision,
    )


def build_world(text: Text = plain_text) -> World:
    p1, p2 = project_world(text, "P1"), project_world(text, "P2")
    cross = _user(text, "cross")
    MembershipFactory(project=p1.project, user=cross, role=Role.ANNOTATOR)
    MembershipFactory(project=p2.project, user=cross, role=Role.CURATOR)
    both_admin = _user(text, "both-admin")
    for side in (p1, p2):
        MembershipFactory(project=side.project, user=both_admin, role=Role.ADMIN)
    joint_version, joint_job = _version(text, [p1.project, p2.project], p1.members[Role.CURATOR])
    world = World(
        p1=p1,
        p2=p2,
        joint_version=joint_version,
        joint_job=joint_job,
        outsider=_user(text, "outsider"),
        cross=cross,
        both_admin=both_admin,
    )
    users = [*p1.members.values(), *p2.members.values(), world.outsider, cross, both_admin]
    world.tokens = {user.pk: Token.objects.create(user=user).key for user in users}
    return world


# Clients.


def csrf_client(user: AbstractBaseUser | None) -> Client:
    """A client with CSRF checks on, logged in as `user` (None: anonymous), holding a valid CSRF token that
    `send` puts in every request, as a page's htmx requests carry it."""
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    secret = get_random_string(CSRF_SECRET_LENGTH, allowed_chars=CSRF_ALLOWED_CHARS)
    client.cookies[settings.CSRF_COOKIE_NAME] = secret
    client.defaults["HTTP_X_CSRFTOKEN"] = secret
    return client


def token_client(key: str) -> Client:
    """A client of the API that authenticates with a token alone (no session, no CSRF)."""
    return Client(HTTP_AUTHORIZATION=f"Token {key}")


# What a request wrote.

# Sessions change when a client logs in, not through the views under test; axes (if installed) logs logins.
NOT_FINGERPRINTED_APPS = {"sessions", "axes"}


def _fingerprint_sql() -> str:
    parts = []
    for model in apps.get_models(include_auto_created=True):
        if model._meta.app_label in NOT_FINGERPRINTED_APPS or not model._meta.managed:
            continue
        table = connection.ops.quote_name(model._meta.db_table)
        parts.append(
            f"SELECT '{model._meta.db_table}', "  # noqa: S608 - table names from the models, not from input
            f"md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} AS t"
        )
    return " UNION ALL ".join(parts)


def database_fingerprint() -> dict[str, str]:
    """A hash of every row of every table (but sessions'): equal before and after means nothing was written."""
    with connection.cursor() as cursor:
        cursor.execute(_fingerprint_sql())
        return dict(cursor.fetchall())


def changed_tables(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(table for table in before.keys() | after.keys() if before.get(table) != after.get(table))
