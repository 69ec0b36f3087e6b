"""Login throttling (django-axes, settings LOGIN_FAILURE_LIMIT / LOGIN_LOCKOUT_MINUTES):
repeated failures lock a username out from one address, for a while, with a clear page."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

pytestmark = pytest.mark.django_db

ATTACKER, OWNER = "203.0.113.66", "198.51.100.7"
PASSWORD = "pw-staff-123"


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user("boss", password=PASSWORD, is_staff=True)


def log_in(client, password: str, address: str, path: str = "/accounts/login/"):
    return client.post(path, {"username": "boss", "password": password}, REMOTE_ADDR=address)


def fail_until_locked(client) -> None:
    for _ in range(settings.LOGIN_FAILURE_LIMIT - 1):
        response = log_in(client, "wrong", ATTACKER)
        assert response.status_code == 200  # the form again, with its error
    assert log_in(client, "wrong", ATTACKER).status_code == 429  # the last one locks


def test_repeated_failures_lock_the_username_out_from_that_address(client, staff):
    assert settings.LOGIN_FAILURE_LIMIT == 5 and settings.LOGIN_LOCKOUT_MINUTES == 15
    fail_until_locked(client)
    response = log_in(client, PASSWORD, ATTACKER)  # even the right password
    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many failed logins" in page and "paused for 15 minutes" in page
    assert "_auth_user_id" not in client.session
    # The admin's login is the same door.
    assert log_in(client, PASSWORD, ATTACKER, "/admin/login/?next=/admin/").status_code == 429


def test_nobody_else_is_locked_out(client, staff, django_user_model):
    """One client cannot lock a user out everywhere: the owner, from their own address,
    still logs in; and other usernames from the attacker's address are not locked."""
    fail_until_locked(client)
    owner = type(client)()
    response = log_in(owner, PASSWORD, OWNER)
    assert response.status_code == 302
    assert owner.session["_auth_user_id"] == str(staff.pk)
    django_user_model.objects.create_user("other", password="pw-other-123")
    response = client.post(
        "/accounts/login/", {"username": "other", "password": "pw-other-123"}, REMOTE_ADDR=ATTACKER
    )
    assert response.status_code == 302


def test_a_lockout_ends_after_its_time(client, staff):
    fail_until_locked(client)
    assert log_in(client, PASSWORD, ATTACKER).status_code == 429
    AccessAttempt.objects.update(
        attempt_time=timezone.now() - timedelta(minutes=settings.LOGIN_LOCKOUT_MINUTES, seconds=1)
    )
    assert log_in(client, PASSWORD, ATTACKER).status_code == 302


def test_a_success_forgives_earlier_failures(client, staff):
    for _ in range(settings.LOGIN_FAILURE_LIMIT - 1):
        log_in(client, "wrong", ATTACKER)
    assert log_in(client, PASSWORD, ATTACKER).status_code == 302
    client.post("/accounts/logout/")
    log_in(client, "wrong", ATTACKER)
    assert log_in(client, PASSWORD, ATTACKER).status_code == 302
