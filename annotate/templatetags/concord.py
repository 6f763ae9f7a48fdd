from xml.etree.ElementTree import Element

import markdown as markdown_lib
import nh3
from django import template
from django.utils.safestring import SafeString, mark_safe
from markdown.treeprocessors import Treeprocessor

register = template.Library()

_ALLOWED_TAGS = {
    "p", "br", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "a", "hr", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
# Prompts and responses are untrusted: no links or images at all (their targets are written out as text instead).
_UNTRUSTED_TAGS = (_ALLOWED_TAGS - {"a"}) | {"span"}


@register.filter
def markdown(text: str) -> SafeString:
    """Project guidelines as HTML. Markdown lets raw HTML through, so nh3 (an allow-list sanitiser)
    strips everything but the tags above and unsafe link schemes before the result is marked safe."""
    html = markdown_lib.markdown(text or "", extensions=["tables", "sane_lists"])
    cleaned = nh3.clean(
        html, tags=_ALLOWED_TAGS, url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer"
    )
    return mark_safe(cleaned)  # noqa: S308 - sanitised by nh3 just above


class _LinksAsText(Treeprocessor):
    """A link shows its text and then its address, an image its alt text and address, as plain text: a label
    "official docs" on a link to somewhere else must not hide where it goes, and nothing is fetched."""

    def run(self, root: Element) -> None:
        for element in root.iter():
            if element.tag == "a":
                target = element.get("href", "")
                shown = "".join(element.itertext())
                address = f" ({target})" if target and target != shown else ""
            elif element.tag == "img":
                element.text = f"[image: {element.get('alt', '')}]"
                address = f" ({element.get('src', '')})"
            else:
                continue
            element.tag = "span"
            element.attrib.clear()
            element.tail = address + (element.tail or "")


@register.filter
def formatted(text: object) -> SafeString:
    """A prompt turn or a response as formatted Markdown (the labeling page's "Show formatting"). Raw HTML in
    the text is shown as text, not obeyed; links and images become text; nh3 then keeps only an allow-list of
    tags without attributes, as defence in depth, before the result is marked safe."""
    md = markdown_lib.Markdown(extensions=["fenced_code", "tables", "sane_lists", "nl2br"])
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    md.treeprocessors.register(_LinksAsText(md), "links_as_text", 15)  # after "inline" (20) made the links
    html = md.convert(text if isinstance(text, str) else str(text or ""))
    cleaned = nh3.clean(html, tags=_UNTRUSTED_TAGS, attributes={}, url_schemes=set())
    return mark_safe(cleaned)  # noqa: S308 - sanitised by nh3 just above


@register.filter
def role_label(role: str) -> str:
    return role.capitalize()
