"""Security headers: a Content-Security-Policy the pages satisfy (no inline script or
style), and the Referrer-Policy. HTTPS=1 is in tests/test_settings.py; Chromium checks the
policy against the live pages in tests/browser/test_content_security_policy.py."""

import re

import pytest

pytestmark = pytest.mark.django_db

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
INLINE_STYLE = re.compile(r"<style\b|\sstyle=|\son[a-z]+=", re.I)


def directives(response) -> dict[str, list[str]]:
    policy = response["Content-Security-Policy"]
    parts = [part.strip().split() for part in policy.split(";") if part.strip()]
    return {part[0]: part[1:] for part in parts}


@pytest.fixture
def staff_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("s", is_staff=True))
    return client


PAGES = ["/", "/products/test-boot/", "/checkout/", "/accounts/login/"]


@pytest.mark.parametrize("path", PAGES)
def test_pages_carry_a_strict_policy_and_the_referrer_policy(client, catalogue, path):
    response = client.get(path)
    assert response.status_code == 200
    policy = directives(response)
    assert policy["default-src"] == ["'none'"]
    for name in ("script-src", "style-src", "connect-src"):
        assert policy[name] == ["'self'"], name
    assert policy["frame-ancestors"] == ["'none'"]
    assert "'unsafe-inline'" not in response["Content-Security-Policy"]
    assert response["Referrer-Policy"] == "same-origin"


@pytest.mark.parametrize("path", [*PAGES, "/dashboard/", "/admin/"])
def test_no_page_has_an_inline_script_or_style(staff_client, catalogue, path):
    page = staff_client.get(path).content.decode()
    assert not INLINE_SCRIPT.search(page), INLINE_SCRIPT.search(page)
    assert not INLINE_STYLE.search(page), INLINE_STYLE.search(page)
