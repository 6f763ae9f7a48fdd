"""Import formats by the names people know them by ("PandaLM", "HH-RLHF"), for the import pages."""

from django import template

from annotate.formats import FORMAT_NAMES

register = template.Library()


@register.filter
def format_name(format: str) -> str:
    return FORMAT_NAMES.get(format, format)
