"""Every functional family links its derivation, and the page exists."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FAMILIES = sorted(p for p in (ROOT / "minirattn" / "functional").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("path", FAMILIES, ids=lambda p: p.name)
def test_functional_docstring_links_an_existing_derivation(path):
    doc = path.read_text().split('"""')[1]
    links = re.findall(r"docs/math/[\w-]+\.md", doc)
    assert links, f"{path.name}: its module docstring links no docs/math page"
    for link in links:
        assert (ROOT / link).exists(), f"{path.name} links {link}, which does not exist"
