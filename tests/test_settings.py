import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _check(env_overrides: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    env.update(env_overrides)
    env["DJANGO_SETTINGS_MODULE"] = "shop.settings"
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_refuses_to_start_without_secret_key_when_debug_is_off(tmp_path):
    result = _check({"VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_debug_generates_and_keeps_a_local_key(tmp_path):
    first = _check({"DEBUG": "1", "VAR_DIR": str(tmp_path)})
    assert first.returncode == 0, first.stderr
    key = (tmp_path / "secret_key").read_text()
    assert len(key) >= 50
    second = _check({"DEBUG": "1", "VAR_DIR": str(tmp_path)})
    assert second.returncode == 0
    assert (tmp_path / "secret_key").read_text() == key


def test_invalid_boolean_is_a_clear_error(tmp_path):
    result = _check({"DEBUG": "maybe", "VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "DEBUG must be a boolean" in result.stderr
