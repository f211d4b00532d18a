"""The docs: every functional family links its derivation, every page is in the nav, the project
speaks of itself alone, and the site renders every tutorial."""
import pathlib
import re
import subprocess

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


def _project_text():
    """Every tracked text file of the project: package, tests, tutorials, benchmarks, docs, CI."""
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    suffixes = {".py", ".md", ".yml", ".toml", ".txt"}
    for name in out.stdout.split():
        path = ROOT / name
        if path.suffix in suffixes or name == ".ci/run":
            yield name, path.read_text()


def test_package_lines_fit_in_100_columns():
    for path in sorted((ROOT / "minirattn").rglob("*.py")):
        long = [i for i, line in enumerate(path.read_text().splitlines(), 1) if len(line) > 100]
        assert not long, f"{path.relative_to(ROOT)}: lines {long} are longer than 100 characters"


def test_the_project_speaks_of_itself_alone():
    """No text dates things by rounds of work, cites tracker numbers or points to design files that
    are not in the repository: history goes by date and commit, decisions live in docs/."""
    pattern = re.compile(r"\bsessions? \d|\bsession-\d|\bissue #?\d|DESIGN\.md|STYLE\.md", re.I)
    for name, text in _project_text():
        if name == "tests/test_docs.py":
            continue
        hits = [i for i, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
        assert not hits, f"{name}: lines {hits} speak of things outside the project"


def test_the_vendored_math_renderer_is_the_pinned_one():
    """The site's MathJax (docs/vendor_mathjax.py copied it from the npm registry) is every file
    its MANIFEST lists, unchanged, and the pages load it from the site."""
    import hashlib
    folder = ROOT / "docs" / "javascripts" / "vendor" / "mathjax-3.2.2"
    lines = [l for l in (folder / "MANIFEST").read_text().splitlines() if not l.startswith("#")]
    assert len(lines) > 20 and any(l.endswith("  tex-chtml.js") for l in lines)
    for line in lines:
        digest, name = line.split("  ", 1)
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert on_disk == {l.split("  ", 1)[1] for l in lines} | {"MANIFEST"}
    config = (ROOT / "mkdocs.yml").read_text()
    assert "javascripts/vendor/mathjax-3.2.2/tex-chtml.js" in config and "https://" not in \
        config.split("extra_javascript:")[1].split("plugins:")[0]
