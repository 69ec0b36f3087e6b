"""The staff page and the socket-token endpoint."""

import pytest
from django.core import signing
from django.urls import reverse

from dashboard import tokens
from shop.login_state import session_digest

pytestmark = pytest.mark.django_db


def test_anonymous_visitor_is_sent_to_the_login_page(client):
    response = client.get("/dashboard/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/dashboard/"


def test_logged_in_non_staff_gets_a_403_page(client, shopper):
    client.force_login(shopper)
    response = client.get("/dashboard/")
    assert response.status_code == 403
    assert b"Staff only" in response.content
    assert b"shopper" in response.content


def test_inactive_staff_cannot_open_the_page(client, staff):
    client.force_login(staff)
    staff.is_active = False
    staff.save()
    response = client.get("/dashboard/")
    assert response.status_code == 302  # the session no longer authenticates an inactive user


def test_staff_gets_the_dashboard(client, staff):
    client.force_login(staff)
    response = client.get("/dashboard/")
    assert response.status_code == 200
    assert b'id="dashboard"' in response.content
    assert reverse("dashboard:token").encode() in response.content


def test_token_endpoint_refuses_anonymous_with_json(client):
    response = client.get("/dashboard/token/")
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


def test_token_endpoint_refuses_non_staff_with_json(client, shopper):
    client.force_login(shopper)
    response = client.get("/dashboard/token/")
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


def test_token_endpoint_only_answers_get(client, staff):
    client.force_login(staff)
    assert client.post("/dashboard/token/").status_code == 405


def test_staff_token_names_the_user_under_its_own_salt(client, staff):
    client.force_login(staff)
    response = client.get("/dashboard/token/")
    assert response.status_code == 200
    assert "no-cache" in response["Cache-Control"]
    body = response.json()
    assert set(body) == {"token", "expires_in"}
    assert body["expires_in"] == 60
    session = session_digest(client.session.session_key)
    assert tokens.check_token(body["token"]) == tokens.TokenClaims(staff.pk, session)
    payload = signing.loads(body["token"], salt="dashboard.staff-socket", max_age=60)
    assert payload == {"uid": staff.pk, "username": "staffer", "sid": session}
    with pytest.raises(signing.BadSignature):
        signing.loads(body["token"])  # the default salt does not verify it


def test_each_request_gets_a_token_that_expires(client, staff):
    client.force_login(staff)
    token = client.get("/dashboard/token/").json()["token"]
    assert tokens.check_token(token).user_id == staff.pk
    with pytest.raises(tokens.TokenExpired):  # it carries its signing time
        tokens.check_token(token, max_age=-1)
