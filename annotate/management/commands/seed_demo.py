"""Creates the demo project, its generated items and the demo accounts, and prints the logins.

Idempotent: a second run keeps the same passwords (stored under var/) and adds nothing twice.
"""

import json
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from annotate.models import Role
from annotate.services.demo import demo_project_seed

DEMO_USERS = [
    ("admin", Role.ADMIN),
    ("curator", Role.CURATOR),
    ("annotator1", Role.ANNOTATOR),
    ("annotator2", Role.ANNOTATOR),
]


def _demo_passwords(path: Path) -> dict[str, str]:
    """Passwords made once per checkout and kept private to it, so no fixed password ships in the code."""
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text())
        if all(name in stored for name, _ in DEMO_USERS):
            return stored
    passwords = {name: secrets.token_urlsafe(9) for name, _ in DEMO_USERS}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(passwords, indent=2))
    return passwords


class Command(BaseCommand):
    help = "Seed the demo project and accounts, then print the logins."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--items", type=int, default=40, help="How many demo items to generate.")

    def handle(self, *args: Any, **options: Any) -> None:
        passwords = _demo_passwords(Path(settings.VAR_DIR) / "demo-logins.json")
        users = {name: passwords[name] for name, _ in DEMO_USERS}
        project = demo_project_seed(
            accounts=[(name, role, users[name]) for name, role in DEMO_USERS], item_count=options["items"]
        )
        self.stdout.write(f"Demo project: {project.name} ({project.items.count()} items)")
        self.stdout.write("Demo logins:")
        for name, role in DEMO_USERS:
            self.stdout.write(f"  {name:<11} {passwords[name]:<14} ({Role(role).label.lower()})")
