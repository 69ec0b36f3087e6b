"""Token issue and check, without the database."""

import time
from types import SimpleNamespace

import pytest
from django.core import signing

from dashboard.tokens import MAX_AGE, SALT, InvalidToken, TokenExpired, check_token, issue_token

USER = SimpleNamespace(pk=42, get_username=lambda: "staffer")


class PastSigner(signing.TimestampSigner):
    """Signs as if `seconds_ago` seconds had passed since."""

    def __init__(self, seconds_ago: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seconds_ago = seconds_ago

    def timestamp(self) -> str:
        return signing.b62_encode(int(time.time()) - self.seconds_ago)


def test_round_trip():
    assert check_token(issue_token(USER)) == 42


def test_garbage_is_invalid():
    for garbage in ["", "x", "a:b:c", "not a token at all"]:
        with pytest.raises(InvalidToken):
            check_token(garbage)


def test_tampered_token_is_invalid():
    token = issue_token(USER)
    forged = signing.dumps({"uid": 1, "username": "staffer"}, salt=SALT)
    # Keep the genuine signature, swap in another user's payload.
    tampered = forged.split(":", 1)[0] + ":" + token.split(":", 1)[1]
    with pytest.raises(InvalidToken):
        check_token(tampered)


def test_token_with_another_salt_is_invalid():
    with pytest.raises(InvalidToken):
        check_token(signing.dumps({"uid": 42, "username": "staffer"}))


def test_payload_must_name_a_user_id():
    for payload in [{"username": "staffer"}, {"uid": "42"}, [42]]:
        with pytest.raises(InvalidToken):
            check_token(signing.dumps(payload, salt=SALT))


def test_token_older_than_max_age_is_expired():
    old = PastSigner(MAX_AGE + 5, salt=SALT).sign_object({"uid": 42, "username": "staffer"})
    with pytest.raises(TokenExpired):
        check_token(old)
    recent = PastSigner(MAX_AGE - 5, salt=SALT).sign_object({"uid": 42, "username": "staffer"})
    assert check_token(recent) == 42
