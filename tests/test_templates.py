"""Every path in the site's templates comes from the URLconf or the code ({% url %},
{% static %}, context): none is written out, so moving a page moves every link to it."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = sorted(ROOT.glob("*/templates/**/*.html"))
# An attribute whose value starts with a path: href="/...", data-socket-path="/ws/...".
WRITTEN_OUT_PATH = re.compile(r"""\b(?:href|src|action|data-[\w-]+)\s*=\s*["']/""")


def test_the_templates_are_found():
    assert {path.relative_to(ROOT).parts[0] for path in TEMPLATES} == {"shop", "dashboard"}


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_template_writes_a_path_out(template):
    lines = template.read_text().splitlines()
    assert [line for line in lines if WRITTEN_OUT_PATH.search(line)] == []
