"""Token issue and check, without the database."""

import time
from types import SimpleNamespace

import pytest
from django.core import signing

from dashboard.tokens import (
    MAX_AGE,
    SALT,
    InvalidToken,
    TokenClaims,
    TokenExpired,
    check_token,
    issue_token,
)
from shop.login_state import session_digest

USER = SimpleNamespace(pk=42, get_username=lambda: "staffer")
SESSION = "s3ss10nk3yofth3br0ws3r0000000000"
PAYLOAD = {"uid": 42, "username": "staffer", "sid": session_digest(SESSION)}
CLAIMS = TokenClaims(42, session_digest(SESSION))


class PastSigner(signing.TimestampSigner):
    """Signs as if `seconds_ago` seconds had passed since."""

    def __init__(self, seconds_ago: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seconds_ago = seconds_ago

    def timestamp(self) -> str:
        return signing.b62_encode(int(time.time()) - self.seconds_ago)


def test_round_trip():
    assert check_token(issue_token(USER, SESSION)) == CLAIMS


def test_the_token_names_its_session_without_its_key():
    token = issue_token(USER, SESSION)
    assert SESSION not in signing.b64_decode(token.split(":")[0].encode()).decode()
    assert check_token(issue_token(USER, "an0th3rs3ss10n00000000000000000")) != CLAIMS


def test_garbage_is_invalid():
    for garbage in ["", "x", "a:b:c", "not a token at all"]:
        with pytest.raises(InvalidToken):
            check_token(garbage)


def test_tampered_token_is_invalid():
    token = issue_token(USER, SESSION)
    forged = signing.dumps({**PAYLOAD, "uid": 1}, salt=SALT)
    # Keep the genuine signature, swap in another user's payload.
    tampered = forged.split(":", 1)[0] + ":" + token.split(":", 1)[1]
    with pytest.raises(InvalidToken):
        check_token(tampered)


def test_token_with_another_salt_is_invalid():
    with pytest.raises(InvalidToken):
        check_token(signing.dumps(PAYLOAD))


def test_payload_must_name_a_user_id_and_a_session():
    for payload in [
        {"username": "staffer", "sid": "x"},
        {"uid": "42", "sid": "x"},
        [42],
        {"uid": 42, "username": "staffer"},  # issued before tokens named their session
        {"uid": 42, "sid": None},
    ]:
        with pytest.raises(InvalidToken):
            check_token(signing.dumps(payload, salt=SALT))


def test_token_older_than_max_age_is_expired():
    old = PastSigner(MAX_AGE + 5, salt=SALT).sign_object(PAYLOAD)
    with pytest.raises(TokenExpired):
        check_token(old)
    recent = PastSigner(MAX_AGE - 5, salt=SALT).sign_object(PAYLOAD)
    assert check_token(recent) == CLAIMS
