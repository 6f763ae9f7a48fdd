import markdown as markdown_lib
import nh3
from django import template
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

_ALLOWED_TAGS = {
    "p", "br", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "a", "hr", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip


@register.filter
def markdown(text: str) -> SafeString:
    """Project guidelines as HTML. Markdown lets raw HTML through, so nh3 (an allow-list sanitiser)
    strips everything but the tags above and unsafe link schemes before the result is marked safe."""
    html = markdown_lib.markdown(text or "", extensions=["tables", "sane_lists"])
    cleaned = nh3.clean(
        html, tags=_ALLOWED_TAGS, url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer"
    )
    return mark_safe(cleaned)  # noqa: S308 - sanitised by nh3 just above


@register.filter
def role_label(role: str) -> str:
    return role.capitalize()
