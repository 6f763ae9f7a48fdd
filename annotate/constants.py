"""Limits shared by forms and services. Label scales and their names live in annotate.labels."""

from annotate.labels import MAX_JUSTIFICATION_CHARS

JUSTIFICATION_MAX_CHARS = MAX_JUSTIFICATION_CHARS
SKIP_REASON_MAX_CHARS = 500
