"""Reads for dataset versions, and the access helpers their views go through.

One rule, here and nowhere else (versions_reachable): a version is reachable only by a user who curates or
administers every project it draws from, since its rows carry those projects' labels (consensus, gold answers,
adjudications). The web pages (through a project the user curates), the API, the training forms and the run pages
all read versions through it. Anything else is a 404, so foreign ids reveal nothing.
"""

from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import (
    Case,
    Count,
    DecimalField,
    Exists,
    F,
    FloatField,
    Func,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce, NullIf, Sign
from django.db.models.lookups import GreaterThan, GreaterThanOrEqual
from django.http import Http404

from annotate import rules
from annotate.access import project_for_member
from annotate.models import Annotation, Item, Membership, Project, Role
from annotate.rules import ItemState
from curation import rule_sql
from curation.models import Adjudication, DatasetRow, DatasetVersion, ExportJob
from curation.services.version_rows import VersionFilters

AnyUser = AbstractBaseUser | AnonymousUser
PREVIEW_ROWS = 20


def versions_reachable(user: AnyUser) -> QuerySet[DatasetVersion]:
    """Versions with at least one project, every one of which the user curates or administers (the module's rule)."""
    links = DatasetVersion.projects.through.objects.filter(datasetversion_id=OuterRef("pk"))
    foreign = links.exclude(project_id__in=curated_projects(user).values("pk"))
    return DatasetVersion.objects.filter(Exists(links)).exclude(Exists(foreign))


def versions_for_project(project: Project, user: AnyUser) -> QuerySet[DatasetVersion]:
    """The project's versions the user reaches, newest first. Lineage is cut to what the user reaches too: the
    children prefetched are only those, and parent_reachable says whether the parent is, so a page names no
    version the user could not open."""
    reachable = versions_reachable(user)
    return (
        reachable.filter(projects=project)
        .annotate(parent_reachable=Exists(reachable.filter(pk=OuterRef("parent_id"))))
        .select_related("parent", "created_by")
        .prefetch_related(Prefetch("children", queryset=reachable.order_by("-created_at", "-id")), "projects")
        .order_by("-created_at", "-id")
    )


def version_for_curator(user: AnyUser, project_id: int, version_id: int) -> tuple[Project, DatasetVersion]:
    """A version of a project the user curates, the user curating every project in it too; else 404 (403 for
    a member of the project in the URL below curator, as project_for_member has it)."""
    project = project_for_member(user, project_id, min_role=Role.CURATOR)
    version = versions_for_project(project, user).filter(pk=version_id).first()
    if version is None:
        raise Http404("No such dataset version")
    return project, version


def export_for_member(user: AnyUser, project_id: int, version_id: int, job_id: int) -> ExportJob:
    """A finished export of a version the user may open (version_for_curator); else 404."""
    _, version = version_for_curator(user, project_id, version_id)
    job = ExportJob.objects.filter(pk=job_id, version=version, status=ExportJob.Status.DONE).first()
    if job is None or not job.file:
        raise Http404("No such export")
    return job


def version_rows_preview(version: DatasetVersion) -> QuerySet[DatasetRow]:
    """The first rows, each with its item's number in the project (None where the item is gone)."""
    number = Item.objects.filter(pk=OuterRef("item_id")).values("number")
    rows = DatasetRow.objects.filter(version=version).annotate(item_number=Subquery(number))
    return rows.order_by("position")[:PREVIEW_ROWS]


def export_jobs_for_version(version: DatasetVersion) -> QuerySet[ExportJob]:
    return ExportJob.objects.filter(version=version).select_related("created_by").order_by("-created_at", "-id")


def parent_choices(project: Project, user: AnyUser) -> QuerySet[DatasetVersion]:
    """Versions a new version of the project may descend from: the project's that the user reaches."""
    return versions_reachable(user).filter(projects=project).order_by("-created_at", "-id")


def curated_projects(user: AnyUser) -> QuerySet[Project]:
    """Projects the user curates or administers: what a version may draw from."""
    if getattr(user, "is_superuser", False):
        return Project.objects.order_by("name")
    if user.pk is None:
        return Project.objects.none()
    curating = Membership.objects.filter(user_id=user.pk, role__in=[Role.CURATOR, Role.ADMIN])
    return Project.objects.filter(pk__in=curating.values("project_id")).order_by("name")


def sources_for_projects(projects: list[Project]) -> list[str]:
    rows = Item.objects.filter(project__in=projects).exclude(source="").values_list("source", flat=True)
    return list(rows.distinct().order_by("source")[:200])


# What the build form's live count says: how many rows a freeze of these filters would write, by state and by
# provenance, counted in the database over the items' label summary columns (one pass over the project's items,
# no annotation read), by the rules curation.services.version_rows applies row by row:
#
# - an item qualifies by its state (curation.rule_sql.item_state), as qualifying_items selects it;
# - adjudicated: a row unless the curator's latest label is a tie; provenance "adjudicated";
# - agreed or disputed: the consensus rule's side; none on a tie. Under "mean" the side is the sign of the strength
#   sum; under "weighted" too, unless some annotator's weight differs from 1: then items with both sides taken (or
#   every item, when a weight is 0) weigh their annotations in a subquery. Agreement, the share of strengths on the
#   side, rounded to 4 places as the rows round it, must reach the minimum. Provenance "imported" when every
#   annotation came with an import, else "human_consensus".
# - "dawid_skene" fits its posteriors over every label of the project at freeze, too slow for a form: the count is
#   then what could give a row (items with a strength on either side), an upper bound, and says so.
AI_PROVENANCE = (
    DatasetRow.Provenance.AI_ACCEPTED,
    DatasetRow.Provenance.AI_FLIPPED,
    DatasetRow.Provenance.AI_LABELLED,
)


@dataclass(frozen=True)
class RowCount:
    """Rows a freeze would write: the total, by item state and by provenance; `exact` False for an upper bound."""

    total: int
    by_state: dict[str, int]
    by_provenance: dict[str, int]
    exact: bool

    def state(self, name: str) -> int:
        return self.by_state.get(name, 0)

    def provenance(self, name: str) -> int:
        return self.by_provenance.get(name, 0)

    @property
    def ai_decided(self) -> int:
        return sum(self.by_provenance.get(name, 0) for name in AI_PROVENANCE)


def version_row_count(*, projects: list[Project], filters: VersionFilters) -> RowCount:
    """The rows a version of these projects under `filters` would hold (the module's rules above)."""
    by_state: Counter[str] = Counter()
    by_provenance: Counter[str] = Counter()
    for project in projects:
        for (state, provenance), count in _project_row_counts(project, filters).items():
            if provenance in filters.provenance and count:
                by_state[state] += count
                by_provenance[provenance] += count
    return RowCount(
        total=sum(by_state.values()),
        by_state=dict(by_state),
        by_provenance=dict(by_provenance),
        exact=filters.consensus != "dawid_skene",
    )


def _project_row_counts(project: Project, filters: VersionFilters) -> Counter[tuple[str, str]]:
    """Rows by (state, provenance) of the project's items. Most items have no curator decision, and their state
    needs none: every item is counted as if none had been made (the state's CASE without its decision sets, an
    index-only pass), then the few decided items are counted again, taken back out as undecided and put in by
    their real state."""
    items = Item.objects.filter(project=project)
    if filters.sources:
        items = items.filter(source__in=filters.sources)
    undecided = Q(item_id__lt=0)  # no decision is about such an item: the state as if none had been made
    decided = items.filter(pk__in=Adjudication.objects.filter(item__project=project).values("item_id"))
    counts = _row_groups(items, project, filters, undecided)
    counts.subtract(_row_groups(decided, project, filters, undecided))
    counts.update(_row_groups(decided, project, filters, None))
    return counts


def _row_groups(items: QuerySet[Item], project: Project, filters: VersionFilters, within: Q | None) -> Counter:
    """Rows by (state, provenance) of `items`, their state by rule_sql.item_state(project, within). Items are
    grouped by state and by what decides their row; which groups give rows, and their provenance, is decided
    here, so the state's CASE is computed once per item rather than in every clause that would read it."""
    decided = rule_sql.latest_decision_ids(project, [rules.LABEL], within).exclude(strength=0).exclude(strength=None)
    groups = (
        items.annotate(spread=rule_sql.strength_spread(), side=_consensus_side(project, filters.consensus))
        .annotate(
            state=rule_sql.item_state(project, within),
            imported_only=rule_sql.boolean(Q(annotation_count__gt=0, human_count=0)),
            labelled=rule_sql.boolean(Q(pk__in=decided)),  # an adjudicated item's row: not a tie
            consensus=rule_sql.boolean(~Q(side=0) & _agreement_q(filters)),  # an agreed or disputed one's
        )
        .values("state", "imported_only", "labelled", "consensus")
        .annotate(n=Count("pk"))
        .order_by()
    )
    counts: Counter[tuple[str, str]] = Counter()
    for group in groups:
        state = group["state"]
        if state not in filters.states or not group["labelled" if state == ItemState.ADJUDICATED else "consensus"]:
            continue
        if state == ItemState.ADJUDICATED:
            provenance = DatasetRow.Provenance.ADJUDICATED
        elif group["imported_only"]:
            provenance = DatasetRow.Provenance.IMPORTED
        else:
            provenance = DatasetRow.Provenance.CONSENSUS
        counts[(state, str(provenance))] += group["n"]
    return counts


def _consensus_side(project: Project, rule: str) -> Case | Cast:
    """The side (-1, 0, +1) the consensus rule takes for an agreed or disputed item, in SQL."""
    by_sum = Cast(Sign("strength_sum"), IntegerField())
    if rule == "dawid_skene":
        # An upper bound: any item with a strength on either side might give a row.
        return Case(When(Q(prefer_a_count__gt=0) | Q(prefer_b_count__gt=0), then=Value(1)), default=Value(0))
    weights = Membership.objects.filter(project=project)
    if rule != "weighted" or not weights.exclude(weight=1.0).exists():
        return by_sum
    member = weights.filter(user_id=OuterRef("annotator_id")).values("weight")[:1]
    # Annotators who are not members (an import's) count fully, as the rows have it.
    weighed = (
        Annotation.objects.filter(item_id=OuterRef("pk"), strength__isnull=False)
        .annotate(w=Coalesce(Subquery(member, output_field=FloatField()), Value(1.0)))
        .values("item_id")
        .annotate(
            side=Case(
                When(GreaterThan(Sum("w"), 0), then=Cast(Sign(Sum(F("strength") * F("w"))), IntegerField())),
                default=Value(0),
            )
        )
        .values("side")
    )
    by_weights = Coalesce(Subquery(weighed, output_field=IntegerField()), Value(0))
    if weights.filter(weight__lte=0).exists():
        return Case(default=by_weights, output_field=IntegerField())
    # Every weight above 0: one side taken, the weighted mean takes it too (as the plain sum does).
    split = Q(prefer_a_count__gt=0, prefer_b_count__gt=0)
    return Case(When(~split, then=by_sum), default=by_weights, output_field=IntegerField())


def _agreement_q(filters: VersionFilters) -> Q:
    """Agreement (the share of strengths on the side, rounded to 4 places) reaches the filters' minimum."""
    if filters.min_agreement <= 0:
        return Q()
    on_side = Case(When(side__gt=0, then=F("prefer_b_count")), default=F("prefer_a_count"), output_field=IntegerField())
    decimal: DecimalField = DecimalField(max_digits=20, decimal_places=10)
    share = Func(
        Cast(on_side, decimal) / Cast(NullIf(F("strength_count"), 0), decimal),
        Value(4),
        function="ROUND",
        output_field=decimal,
    )
    return Q(GreaterThanOrEqual(share, Decimal(str(filters.min_agreement)) - Decimal("1e-9")))


STATE_NAMES = {"agreed": "Agreed", "adjudicated": "Adjudicated", "disputed": "Disputed"}
SPLIT_NAMES = {"train": "Train", "validation": "Validation", "test": "Test"}


def version_tables(version: DatasetVersion) -> dict[str, list[tuple[str, str]]]:
    """A version's filters, manifest and stats as rows of (what, value) in words, for tables on its page."""
    from curation.aggregation import CONSENSUS_RULES

    filters = VersionFilters.from_json(version.filters or {})
    provenance = dict(DatasetRow.Provenance.choices)
    manifest, stats = version.manifest or {}, version.stats or {}
    counts = manifest.get("counts", {})
    return {
        "filters": [
            ("States", ", ".join(STATE_NAMES.get(s, s) for s in filters.states)),
            ("Consensus rule", CONSENSUS_RULES.get(filters.consensus, filters.consensus)),
            ("Minimum agreement", f"{filters.min_agreement:g}"),
            ("Provenance", ", ".join(str(provenance.get(p, p)) for p in filters.provenance)),
            ("Sources", ", ".join(filters.sources) or "every source"),
            ("Split", " · ".join(f"{SPLIT_NAMES[k]} {filters.splits.get(k, 0):g}" for k in SPLIT_NAMES)),
            ("Seed", str(filters.seed)),
        ],
        "manifest": [
            ("Projects", ", ".join(str(p.get("name", p.get("id"))) for p in manifest.get("projects", []))),
            ("Rows", str(manifest.get("row_count", ""))),
            ("Rows by state", _counted(counts.get("state", {}), STATE_NAMES)),
            ("Row weight", "the consensus rule's confidence (a curator's label counts 1)"),
            ("Label schema versions", _schema_versions(manifest.get("schema_versions", {})) or "none recorded"),
            ("Content hash", str(manifest.get("content_hash", ""))),
            ("Code version", str(manifest.get("code_version", ""))),
        ]
        if manifest
        else [],
        "stats": [
            ("Rows", str(stats.get("rows", 0))),
            *((f"{name} split", str(stats.get("split", {}).get(k, 0))) for k, name in SPLIT_NAMES.items()),
            *((str(provenance.get(k, k)), str(v)) for k, v in stats.get("provenance", {}).items()),
            ("Mean agreement", "—" if stats.get("mean_agreement") is None else f"{stats['mean_agreement']:.2f}"),
        ]
        if stats
        else [],
    }


def _counted(counts: dict[str, object], names: dict[str, str]) -> str:
    return " · ".join(f"{names.get(k, k)} {v}" for k, v in counts.items())


def _schema_versions(used: dict[str, list[int]]) -> str:
    """{"3": [1, 2]} as "project 3: 1, 2"."""
    return " · ".join(f"project {pk}: {', '.join(str(n) for n in numbers)}" for pk, numbers in used.items())
