"""Agreement and the active reward model of each project on the project list, for its curators and admins: two
queries whatever the number of projects, reading only the agreement figures out of each cached quality report
(curation.models.ProjectQuality) rather than the whole report."""

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.base_user import AbstractBaseUser

from annotate.models import Project, Role
from annotate.selectors import projects_with_roles
from curation.models import ProjectQuality
from training.models import RewardModel


@dataclass(frozen=True)
class ProjectSummary:
    project: Project
    role: str
    alpha: float | None = None  # Krippendorff's alpha on strengths, as the annotators page last computed it
    pairwise: float | None = None  # pairwise agreement on signs
    agreement_items: int = 0  # items with two strengths or more
    computed_at: datetime | None = None  # None: never computed
    model_id: int | None = None  # the active reward model
    model_run_id: int | None = None
    model_accuracy: float | None = None  # its held-out accuracy
    model_created_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


def project_summaries(user: AbstractBaseUser) -> list[ProjectSummary]:
    """The user's projects where they are curator or admin, with their agreement and active model."""
    projects = [(p, role) for p, role in projects_with_roles(user) if Role.rank(role) >= Role.rank(Role.CURATOR)]
    ids = [project.pk for project, _ in projects]
    if not ids:
        return []
    agreement = {
        row[0]: row[1:]
        for row in ProjectQuality.objects.filter(project_id__in=ids, report__isnull=False).values_list(
            "project_id",
            "report__agreement__alpha_strength",
            "report__agreement__pairwise",
            "report__agreement__items",
            "computed_at",
        )
    }
    models = {
        row[0]: row[1:]
        for row in RewardModel.objects.filter(project_id__in=ids, is_active=True).values_list(
            "project_id", "pk", "run_id", "model_card__metrics__heldout__accuracy", "created_at"
        )
    }
    summaries = []
    for project, role in projects:
        alpha, pairwise, items, computed_at = agreement.get(project.pk, (None, None, 0, None))
        model_id, run_id, accuracy, created_at = models.get(project.pk, (None, None, None, None))
        summaries.append(
            ProjectSummary(
                project,
                role,
                alpha=_number(alpha),
                pairwise=_number(pairwise),
                agreement_items=int(items or 0),
                computed_at=computed_at,
                model_id=model_id,
                model_run_id=run_id,
                model_accuracy=_number(accuracy),
                model_created_at=created_at,
            )
        )
    return summaries


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
