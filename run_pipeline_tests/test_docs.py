"""The docs a user or contributor needs live in the repository: every relative link in the
README files and docs/ resolves to a file of the repository, and none points outside it."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "run_pipeline").glob("*/README.md"))]


def test_links_stay_in_the_repository():
    assert (REPO / "docs" / "wandb-wire.md") in DOCS
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)", text):
            if re.match(r"[a-z]+://", target):
                assert target.startswith("https://"), f"{doc.name}: {target}"  # public sites only
                continue
            resolved = (doc.parent / target).resolve()
            assert resolved.is_relative_to(REPO) and resolved.exists(), f"{doc.name}: {target}"
        # A path in backquotes that climbs out of the repository is a link in all but name.
        for path in re.findall(r"`(\.\./[\w./-]+\.\w+)`", text):
            assert (doc.parent / path).resolve().is_relative_to(REPO), f"{doc.name}: {path}"
