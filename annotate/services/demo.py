"""The demo project `make run` seeds."""

import hashlib
import json

from django.contrib.auth import get_user_model
from django.db import transaction

from annotate.demo import demo_pairs
from annotate.models import Item, Project, Role
from annotate.services.projects import membership_set
from annotate.services.schemas import default_schema, label_schema_set

DEMO_PROJECT = "Demo: everyday questions"
DEMO_GUIDELINES = """Compare the two responses to the **last user turn**.

- Prefer the response that is *correct*; a confident wrong answer is worse than a hedged right one.
- Then prefer the one that is more helpful and clearer.
- Use **About the same** only when you truly cannot pick.
- Write one sentence of justification: what decided it.
"""


@transaction.atomic
def demo_project_seed(*, accounts: list[tuple[str, str, str]], item_count: int) -> Project:
    """The demo project with `item_count` generated items and one member per (username, role, password)."""
    project, _ = Project.objects.get_or_create(
        name=DEMO_PROJECT, defaults={"guidelines": DEMO_GUIDELINES, "overlap": 2, "lease_minutes": 30}
    )
    # The demo shows everything Concord collects: the default schema (HelpSteer2 ratings, spans, preference).
    label_schema_set(project=project, definition=default_schema())
    User = get_user_model()
    for username, role, password in accounts:
        user, _ = User.objects.get_or_create(username=username)
        user.set_password(password)
        # The demo admin also gets Django's admin site, to look at raw rows.
        user.is_staff = user.is_superuser = role == Role.ADMIN
        user.save(update_fields=["password", "is_staff", "is_superuser"])
        membership_set(project=project, user=user, role=role)
    for index, pair in enumerate(demo_pairs(count=item_count)):
        # Alternate sides so "A" is not always the better answer.
        a, b, label = (pair.better, pair.worse, -1) if index % 2 == 0 else (pair.worse, pair.better, 1)
        content_hash = hashlib.sha256(json.dumps([pair.prompt, sorted([a, b])]).encode()).hexdigest()
        Item.objects.get_or_create(
            project=project,
            content_hash=content_hash,
            defaults={
                "prompt": pair.prompt,
                "response_a": a,
                "response_b": b,
                "source": "concord-demo",
                "external_id": f"demo-{index}",
                "metadata": {"kind": pair.kind},
                "source_label": label,
            },
        )
    return project
