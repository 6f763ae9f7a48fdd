import hashlib
from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.db.models import F
from django.utils import timezone

from annotate.labels import PREFERENCE_ONLY_SCHEMA
from annotate.models import Annotation, Assignment, Item, LabelSchema, Membership, Project, Role
from annotate.services.label_summary import item_label_summaries_refresh

DEFAULT_PASSWORD = "correct-horse-battery"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password(DEFAULT_PASSWORD)


class ProjectFactory(factory.django.DjangoModelFactory):
    """A project whose label schema (version 1) is `schema`: preference only unless a test asks for more."""

    class Meta:
        model = Project
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Project {n}")
    guidelines = "Prefer the **more helpful** and harmless response."
    overlap = 2
    lease_minutes = 30
    gold_rate = 0

    @factory.post_generation
    def schema(self, create, extracted, **kwargs):  # type: ignore[no-untyped-def]
        if create:
            # factory-boy hands the Project it built in as `self`.
            LabelSchema.objects.create(project=self, version=1, definition=extracted or PREFERENCE_ONLY_SCHEMA)  # type: ignore[misc]


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.ANNOTATOR


class ItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Item

    project = factory.SubFactory(ProjectFactory)
    prompt = factory.Sequence(lambda n: [{"role": "user", "content": f"Question number {n}?"}])
    response_a = factory.Sequence(lambda n: f"First answer to question {n}.")
    response_b = factory.Sequence(lambda n: f"Second answer to question {n}.")
    source = "tests"
    content_hash = factory.LazyAttribute(
        lambda o: hashlib.sha256(f"{o.prompt}|{o.response_a}|{o.response_b}".encode()).hexdigest()
    )


def member(project: Project, role: str = Role.ANNOTATOR, **user_fields):  # type: ignore[no-untyped-def]
    """A user with the given role in the project."""
    return MembershipFactory(project=project, role=role, user=UserFactory(**user_fields)).user


class AnnotationFactory(factory.django.DjangoModelFactory):
    """An annotation; keeps the item's annotation_count and label summary in step, as annotation_submit does."""

    class Meta:
        model = Annotation

    item = factory.SubFactory(ItemFactory)
    annotator = factory.SubFactory(UserFactory)
    strength = 1

    @classmethod
    def _create(cls, model_class, *args, **kwargs):  # type: ignore[no-untyped-def]
        annotation = super()._create(model_class, *args, **kwargs)
        Item.objects.filter(pk=annotation.item_id).update(annotation_count=F("annotation_count") + 1)
        item_label_summaries_refresh(item_ids=[annotation.item_id])
        return annotation


class AssignmentFactory(factory.django.DjangoModelFactory):
    """A live lease of the item to the annotator, as assignment_next hands work out: annotation_submit and
    assignment_skip take work only on one. It does not check the item's overlap; assignment_next does."""

    class Meta:
        model = Assignment

    item = factory.SubFactory(ItemFactory)
    annotator = factory.SubFactory(UserFactory)
    status = Assignment.Status.LEASED
    leased_at = factory.LazyFunction(timezone.now)
    expires_at = factory.LazyAttribute(lambda o: o.leased_at + timedelta(minutes=o.item.project.lease_minutes))
