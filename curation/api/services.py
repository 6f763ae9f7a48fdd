"""Writes of the REST API that are not curation's own: API tokens."""

from django.contrib.auth.base_user import AbstractBaseUser
from rest_framework.authtoken.models import Token


def api_token_get_or_create(*, user: AbstractBaseUser) -> tuple[Token, bool]:
    """The user's API token, created if the user has none; and whether it was created."""
    return Token.objects.get_or_create(user=user)
