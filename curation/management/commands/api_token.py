"""Print a user's API token, creating it if needed: `manage.py api_token USERNAME`."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from curation.api.services import api_token_get_or_create


class Command(BaseCommand):
    help = "Print the user's REST API token (created if the user has none), for `Authorization: Token <key>`."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user named {options['username']!r}.")
        token, created = api_token_get_or_create(user=user)
        if created:
            self.stderr.write(f"Created a token for {user}.")
        # The key alone on standard output, so that `TOKEN=$(manage.py api_token me)` works.
        self.stdout.write(token.key)
