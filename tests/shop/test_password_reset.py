"""Password reset works when the site can send mail (settings.PASSWORD_RESET, from
EMAIL_URL or DEBUG) and is not offered otherwise (it logged an ERROR for every request)."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.core import mail

pytestmark = pytest.mark.django_db

RESET_PAGES = [
    "/accounts/password_reset/",
    "/accounts/password_reset/done/",
    "/accounts/reset/MQ/set-password/",
    "/accounts/reset/done/",
]


@pytest.fixture
def ann(db):
    return get_user_model().objects.create_user("ann", "ann@example.com", "pw-ann-old-1")


def test_without_mail_password_reset_is_not_offered(client, ann, settings):
    settings.PASSWORD_RESET = False  # production without EMAIL_URL: the test settings' default
    for path in RESET_PAGES:
        assert client.get(path).status_code == 404, path
    assert client.post(RESET_PAGES[0], {"email": "ann@example.com"}).status_code == 404
    assert not mail.outbox
    assert "Forgot your password" not in client.get("/accounts/login/").content.decode()


def test_with_mail_a_shopper_resets_the_password(client, ann, settings):
    settings.PASSWORD_RESET = True  # (the tests' mail goes to django.core.mail.outbox)
    login_page = client.get("/accounts/login/").content.decode()
    assert 'href="/accounts/password_reset/"' in login_page
    response = client.post(RESET_PAGES[0], {"email": "ann@example.com"})
    assert response.status_code == 302 and response["Location"] == RESET_PAGES[1]
    [message] = mail.outbox
    assert message.to == ["ann@example.com"]
    link = re.search(r"http://testserver(/accounts/reset/\S+/)", message.body)[1]
    form = client.get(link, follow=True)
    assert "Set a new password" in form.content.decode()
    response = client.post(
        form.redirect_chain[-1][0],
        {"new_password1": "pw-ann-new-2x", "new_password2": "pw-ann-new-2x"},
    )
    assert response.status_code == 302 and response["Location"] == "/accounts/reset/done/"
    ann.refresh_from_db()
    assert ann.check_password("pw-ann-new-2x")
