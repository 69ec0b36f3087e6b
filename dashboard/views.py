"""The staff dashboard page and the endpoint that issues its socket tokens."""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .routing import SOCKET_PATH
from .tokens import MAX_AGE, issue_token


def _is_staff(request: HttpRequest) -> bool:
    return request.user.is_active and request.user.is_staff


def staff_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Anonymous visitors go to the login page; logged-in non-staff get a 403 page.

    (Django's `staff_member_required` sends everyone to the admin login, which would show a
    logged-in shopper a login form instead of telling them they cannot come in.)
    """

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not _is_staff(request):
            return render(request, "dashboard/forbidden.html", status=403)
        return view(request, *args, **kwargs)

    return wrapper


@require_GET
@never_cache
@staff_page
def index(request: HttpRequest) -> HttpResponse:
    """The live dashboard; everything on it arrives over the staff socket."""
    return render(request, "dashboard/index.html", {"socket_path": SOCKET_PATH})


@require_GET
@never_cache
def token(request: HttpRequest) -> JsonResponse:
    """`{"token", "expires_in"}` for the staff socket.

    Called by script, so a visitor who is not (or no longer) staff gets a 403 JSON answer
    rather than a login redirect the script would have to recognise; the page then reloads
    and lands on the login or 403 page.
    """
    session_key = request.session.session_key  # (a logged-in request's session is saved)
    if not request.user.is_authenticated or not _is_staff(request) or session_key is None:
        return JsonResponse({"error": "forbidden", "message": "Staff only."}, status=403)
    token = issue_token(request.user, session_key)
    return JsonResponse({"token": token, "expires_in": MAX_AGE})
