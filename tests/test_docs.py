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


def _nav_pages():
    """Every page path in mkdocs.yml's nav (read as text: no YAML dependency, no MkDocs needed)."""
    text = (ROOT / "mkdocs.yml").read_text().split("\nnav:", 1)[1]
    return re.findall(r":\s*([\w/.-]+\.md)\s*$", text, flags=re.M)


def test_every_docs_page_is_in_the_site_nav_and_every_nav_page_exists():
    nav = _nav_pages()
    assert nav, "mkdocs.yml has no nav pages"
    for page in nav:
        assert (ROOT / "docs" / page).exists(), f"mkdocs.yml's nav names docs/{page}, which does not exist"
    on_disk = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert on_disk == set(nav), f"pages not in the nav: {sorted(on_disk - set(nav))}"


def test_every_tutorial_is_listed_on_the_tutorials_page():
    page = (ROOT / "docs" / "tutorials.md").read_text()
    for path in sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py")):
        assert f"`{path.name}`" in page, f"{path.name} is missing from docs/tutorials.md"
