"""The XSS corpus: strings an attacker might put in any text Concord shows (a project's name, an imported prompt,
a username from an import, a justification...). Each carries its own marker, `xssmarkNN`: script it manages to run
calls `__xss('xssmarkNN')`, and an element or attribute it manages to inject carries the marker, so the browser
test can say which payload got through. Several try to break out of a context (an attribute, a <textarea>, a
<script>, a comment) before injecting.

MARK in a template below becomes the payload's marker."""

from collections import deque
from collections.abc import Iterable

MARKER_PREFIX = "xssmark"

_TEMPLATES = [
    # Tags and event handlers.
    "<script>__xss('MARK')</script>",
    "<img src=x id=MARK onerror=\"__xss('MARK')\">",
    "<svg id=MARK onload=\"__xss('MARK')\">",
    "<svg><script>__xss('MARK')</script></svg>",
    "<body id=MARK onload=__xss('MARK')>",
    "<details open id=MARK ontoggle=__xss('MARK')>",
    "<input autofocus id=MARK onfocus=__xss('MARK')>",
    "<video><source id=MARK onerror=__xss('MARK')></video>",
    "<audio src=x id=MARK onerror=__xss('MARK')>",
    "<marquee id=MARK onstart=__xss('MARK')>m</marquee>",
    "<select autofocus id=MARK onfocus=__xss('MARK')></select>",
    "<x contenteditable autofocus id=MARK onfocus=__xss('MARK')>x</x>",
    "<IMG SRC=x iD=MARK OnErRoR=__xss('MARK')>",
    "<img src=x:x id=MARK onerror=__xss&#40;'MARK'&#41;>",
    "<scr<script>ipt>__xss('MARK')</scr</script>ipt>",
    "<<script>__xss('MARK');//<</script>",
    "<b id=MARK>bold MARK</b>",
    # Breaking out of a context first.
    "\"><img src=x id=MARK onerror=__xss('MARK')>",
    "'><img src=x id=MARK onerror=__xss('MARK')>",
    "</textarea><img src=x id=MARK onerror=__xss('MARK')>",
    "</script><script>__xss('MARK')</script>",
    "</title><script>__xss('MARK')</script>",
    "</style><img src=x id=MARK onerror=__xss('MARK')>",
    "</option></select><img src=x id=MARK onerror=__xss('MARK')>",
    "--><img src=x id=MARK onerror=__xss('MARK')><!--",
    "]]><img src=x id=MARK onerror=__xss('MARK')>",
    '" onmouseover="__xss(\'MARK\')" data-MARK="',
    "' onfocus='__xss(\"MARK\")' autofocus data-MARK='",
    "\";__xss('MARK');//",
    "';__xss('MARK');//",
    '{"role": "</script><script>__xss(\'MARK\')</script>"}',
    # javascript: and data: URLs.
    "javascript:__xss('MARK')",
    "data:text/html,<script>__xss('MARK')</script>",
    "<a id=MARK href=\"javascript:__xss('MARK')\">link MARK</a>",
    "<a id=MARK href=\" jav&#x09;ascript:__xss('MARK')\">tab MARK</a>",
    "<iframe id=MARK src=\"javascript:__xss('MARK')\"></iframe>",
    "<iframe id=MARK srcdoc=\"<script>parent.__xss('MARK')</script>\"></iframe>",
    "<object id=MARK data=\"javascript:__xss('MARK')\"></object>",
    "<embed id=MARK src=\"javascript:__xss('MARK')\">",
    "<form id=MARK><button formaction=\"javascript:__xss('MARK')\">go</button></form>",
    "<base id=MARK href=\"javascript:__xss('MARK')//\">",
    '<meta id=MARK http-equiv="refresh" content="0;url=javascript:__xss(\'MARK\')">',
    "<div id=MARK style=\"background:url(javascript:__xss('MARK'))\">d</div>",
    # SVG.
    "<svg><a id=MARK xlink:href=\"javascript:__xss('MARK')\"><text y=20>MARK</text></a></svg>",
    "<svg><animate id=MARK onbegin=__xss('MARK') attributeName=x dur=1s>",
    "<svg><foreignObject><img src=x id=MARK onerror=__xss('MARK')></foreignObject></svg>",
    # Mutation XSS: markup a sanitiser and the parser read differently.
    "<math><mtext><table><mglyph><style><img src=x id=MARK onerror=__xss('MARK')>",
    "<noscript><p title=\"</noscript><img src=x id=MARK onerror=__xss('MARK')>\">",
    "<svg></p><style><a id=\"</style><img src=x id=MARK onerror=__xss('MARK')>\">",
    "<!--<img src=\"--><img src=x id=MARK onerror=__xss('MARK')//\">",
    "<template><img src=x id=MARK onerror=__xss('MARK')></template>",
    # Template syntax (Django's, and client-side templating's).
    "{{ MARK }}{% now 'Y' %}",
    "{% debug %}{# MARK #}",
    "{{constructor.constructor('__xss(\"MARK\")')()}}",
    "${__xss('MARK')}",
    "#{__xss('MARK')}<%= MARK %>",
    # htmx attributes: markup that htmx would act on if it reached the DOM.
    '<div id=MARK hx-get="/projects/" hx-trigger="load" hx-target="body">MARK</div>',
    "<div id=MARK hx-on:htmx:load=\"__xss('MARK')\">MARK</div>",
    '<button id=MARK hx-post="/accounts/logout/" hx-trigger="load">MARK</button>',
    "<div id=MARK data-hx-on::load=\"__xss('MARK')\">MARK</div>",
    '" hx-on:click="__xss(\'MARK\')" hx-trigger="load',
    "' hx-get='/projects/' hx-trigger='load' data-MARK='",
    # Right-to-left and invisible characters.
    "\u202e<img src=x id=MARK onerror=__xss('MARK')>\u202c",
    "invoice\u202egpj.exe MARK",
    "\u2066MARK\u2069\u200f\u200e\u2067<b id=MARK>x</b>\u2069",
    "\u200bjavascript:__xss('MARK')",
    # Markdown (project guidelines are Markdown).
    "[click MARK](javascript:__xss('MARK'))",
    "[data MARK](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "![MARK](x\" onerror=\"__xss('MARK'))",
    "[MARK]: javascript:__xss('MARK')\n\n[MARK]",
    "<a href=\"javascript:__xss('MARK')\" id=MARK>[md MARK](#)</a>",
    # Already escaped: must show as typed, not as markup.
    "&lt;script&gt;__xss('MARK')&lt;/script&gt;",
]


def marker(number: int) -> str:
    return f"{MARKER_PREFIX}{number:02d}"


PAYLOADS: list[str] = [template.replace("MARK", marker(n)) for n, template in enumerate(_TEMPLATES)]


class PayloadFeed:
    """The `text` of a security world (tests.security.world.Text) made of payloads: each field, by what it is, gets
    the next few payloads that fit its limit (the same ones every time it is asked again), so a world's fields
    share the corpus between them; the fields in `whole` get every payload."""

    def __init__(self, payloads: Iterable[str], *, per_field: int, whole: Iterable[str] = ()) -> None:
        self.payloads = list(payloads)
        self._queue = deque(self.payloads)
        self._per_field = per_field
        self._whole = set(whole)
        self._given: dict[str, str] = {}

    def __call__(self, what: str, max_chars: int) -> str:
        if what not in self._given:
            chosen = self.payloads if what in self._whole else self._next(max_chars)
            self._given[what] = "\n".join(chosen)[:max_chars]
        return self._given[what]

    def _next(self, max_chars: int) -> list[str]:
        chosen: list[str] = []
        too_long: list[str] = []
        while len(chosen) < self._per_field and len(chosen) + len(too_long) < len(self.payloads):
            payload = self._queue.popleft()
            fits = len("\n".join([*chosen, payload])) <= max_chars
            (chosen if fits else too_long).append(payload)
        self._queue.extendleft(reversed(too_long))  # first in line for the next field
        self._queue.extend(chosen)  # round and round: the corpus is shared out again and again
        return chosen
