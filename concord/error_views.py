"""The pages people get when a request goes wrong (concord/urls.py's handlers, CSRF_FAILURE_VIEW), each in the site's
layout with a way back to the project list.

403 and 404 say why: the access helpers (annotate/access.py) raise PermissionDenied and Http404 with a sentence
written for the person ("This needs the curator role in Demo"). A 404 from the URL resolver carries a dict for
the debug page, not a sentence, so it gets the plain one. A 500 says nothing of what failed, and renders without
the request's context processors or the database, which may be what failed.
"""

import logging

from django.http import HttpRequest, HttpResponse, HttpResponseServerError
from django.shortcuts import render
from django.template import loader
from django.templatetags.static import static
from django.urls import Resolver404

logger = logging.getLogger(__name__)


def _reason(exception: Exception | None) -> str:
    """The exception's message, ending in a full stop, when it is a sentence for people, else ""."""
    if exception is None or isinstance(exception, Resolver404) or not exception.args:
        return ""
    message = exception.args[0]
    if not isinstance(message, str) or not message.strip():
        return ""
    message = message.strip()
    return message if message.endswith((".", "!", "?")) else message + "."


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(request, "403.html", {"reason": _reason(exception)}, status=403)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return render(request, "404.html", {"reason": _reason(exception)}, status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    try:
        return HttpResponseServerError(loader.get_template("500.html").render({}))
    except Exception:  # the layout itself failed (a static file missing from the manifest, say)
        logger.exception("The 500 page could not be rendered")
        return HttpResponseServerError(
            "<!doctype html><title>Something went wrong</title><h1>Something went wrong</h1>", content_type="text/html"
        )


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """A form refused for its CSRF token: mostly a page left open past its session, or cookies turned off."""
    return render(request, "403_csrf.html", {"reason": reason}, status=403)


def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico whatever the page links: send them to the icon base.html links."""
    response = HttpResponse(status=302)
    response["Location"] = static("favicon.svg")
    response["Cache-Control"] = "max-age=86400"
    return response
