"""The docs site as a reader sees it: built from a virtual environment that holds only the `docs`
extra (`pip install -e ".[docs]" && mkdocs build --strict`, as the README says), served on
127.0.0.1 and opened page by page in headless Chromium with every other host unreachable.

Checked in the browser's DOM after its scripts ran: every page that holds math has it typeset
and shows no raw TeX; every tutorial page shows its outputs, its figures and no error; tutorials
09 and 10 show their stored full runs; nothing the pages load is missing. And the stored runs
are the tutorials' own cells. docs/testing.md, "The docs site as a reader sees it".

Needs Chromium (Debian's `chromium`) and pip's access to the package registry (or its cache) for
the virtual environment, which is kept in pytest's cache folder until pyproject.toml changes.
Without them the tests skip, except where MINIRATTN_REQUIRE_DOCS=1 (CI), where they fail.
"""
import base64
import concurrent.futures
import functools
import hashlib
import html.parser
import http.server
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
REQUIRED = os.environ.get("MINIRATTN_REQUIRE_DOCS") == "1"
TUTORIALS = sorted(p.stem for p in (ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
STORED = sorted(p.stem for p in (ROOT / "tutorials").glob("[0-9][0-9]_*.ipynb"))
#: tutorial -> the pictures its page shows (the training curves and the masks of tutorial 09)
PICTURES = {"09_training_and_masks": 2}

pytestmark = pytest.mark.slow


def _unavailable(reason):
    if REQUIRED:
        pytest.fail(reason + " (MINIRATTN_REQUIRE_DOCS=1: this must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docs_python(pytestconfig):
    """The Python of a fresh virtual environment holding the project and its `docs` extra only."""
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]
    venv = pathlib.Path(pytestconfig.cache.mkdir("docs-venv")) / key
    python = venv / "bin" / "python"
    if not (venv / "complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        out = subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", f"{ROOT}[docs]"],
                             capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            _unavailable(f"pip install -e '.[docs]' into a fresh venv failed:\n{out.stderr[-2000:]}")
        (venv / "complete").write_text("")
    return python


@pytest.fixture(scope="session")
def site(docs_python, tmp_path_factory):
    """`mkdocs build --strict` of the checkout with that environment's Python alone."""
    out = tmp_path_factory.mktemp("site")
    env = {k: v for k, v in os.environ.items() if k not in ("MINIRATTN_FAST", "PYTHONPATH")}
    env["NO_MKDOCS_2_WARNING"] = "1"
    r = subprocess.run([str(docs_python), "-m", "mkdocs", "build", "--strict", "--site-dir",
                        str(out)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=1800)
    assert r.returncode == 0, f"mkdocs build --strict failed:\n{r.stderr[-4000:]}"
    return out


class _Quiet(http.server.SimpleHTTPRequestHandler):
    missing = []

    def log_message(self, *args):
        pass

    def send_error(self, code, *args, **kwargs):
        self.missing.append((code, self.path))
        super().send_error(code, *args, **kwargs)


@pytest.fixture(scope="session")
def served(site):
    """The built site on 127.0.0.1 (a free port); yields its address and the 4xx requests seen."""
    handler = type("Handler", (_Quiet,), {"missing": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(handler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler.missing
    server.shutdown()


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    _unavailable("no Chromium found (apt-get install chromium)")


def dump_dom(browser, url):
    """The page's DOM after its scripts ran (MathJax included), every host but 127.0.0.1
    unresolvable: what a reader with no network sees."""
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             "--virtual-time-budget=30000", "--dump-dom", url],
            capture_output=True, text=True, timeout=180)
    assert out.returncode == 0 and "</html>" in out.stdout, f"{url}: {out.stderr[-2000:]}"
    return out.stdout


#: What a reader sees as text: not scripts and styles, not code (which may hold a backslash or a
#: dollar sign of its own), not MathJax's hidden MathML copy for screen readers.
SKIP = {"script", "style", "noscript", "template", "code", "pre", "mjx-assistive-mml", "svg",
        ".clipboard-copy-txt"}   # (the hidden copy of a notebook cell's source for its copy button)
#: Raw TeX in prose: a control word (\frac, \partial), a \( \) or \[ \] delimiter, or a $...$
#: around something formula-like.
RAW_TEX = re.compile(r"\\[A-Za-z]{2,}|\\[()\[\]]|\$\$|\$[^$\s][^$]{0,80}?\$")


class Page(html.parser.HTMLParser):
    """The visible text of a page and the counts of the elements the checks look at."""
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
            "source", "track", "wbr"}

    def __init__(self, markup):
        super().__init__()
        self.stack, self.text, self.count, self.images, self.output = [], [], {}, [], []
        self.feed(markup)
        self.text = " ".join("".join(self.text).split())
        self.output = " ".join("".join(self.output).split())   # printed outputs and code too

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in [tag] + [f".{c}" for c in (attrs.get("class") or "").split()] + \
                [f"[{attrs['data-mime-type']}]" for _ in [0] if attrs.get("data-mime-type")]:
            self.count[key] = self.count.get(key, 0) + 1
        if tag == "img" and (attrs.get("src") or "").startswith("data:image/png;base64,"):
            self.images.append(attrs["src"])
        if tag not in self.VOID:     # a hidden class stands in for its element on the stack
            hidden = [f".{c}" for c in (attrs.get("class") or "").split() if f".{c}" in SKIP]
            self.stack.append((tag, hidden[0] if hidden else tag))

    def handle_endtag(self, tag):
        if tag in (t for t, _ in self.stack):
            while self.stack.pop()[0] != tag:
                pass

    def handle_data(self, data):
        open_ = {name for _, name in self.stack}
        if not SKIP.intersection(open_):
            self.text.append(data)
        if not {"script", "style"}.intersection(open_):
            self.output.append(data)

    def raw_tex(self):
        return RAW_TEX.findall(self.text)


@pytest.fixture(scope="session")
def pages(site, served):
    """Every page of the site: (its static HTML, its DOM in Chromium) by its path."""
    base, _ = served
    browser = chromium()
    paths = sorted(str(p.relative_to(site).parent) for p in site.rglob("index.html"))
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        doms = pool.map(lambda p: dump_dom(browser, f"{base}/{'' if p == '.' else p + '/'}"),
                        paths)
        return {p: (Page((site / p / "index.html").read_text()), Page(dom))
                for p, dom in zip(paths, doms)}


def test_every_page_with_math_has_it_typeset_and_no_raw_tex_left(pages):
    with_math = [p for p, (static, _) in pages.items() if static.raw_tex()]
    assert len(with_math) >= 25, f"only {len(with_math)} pages hold math: {with_math}"
    assert {f"tutorials/{t}" for t in ("03_batch_normalisation", "10_label_noise")} <= set(with_math)
    for path in with_math:
        dom = pages[path][1]
        assert dom.count.get("mjx-container", 0) > 0, f"{path}: no formula typeset"
        assert dom.count.get("mjx-merror", 0) == 0, f"{path}: MathJax could not read a formula"
        assert not dom.raw_tex(), f"{path}: raw TeX left in the text: {dom.raw_tex()[:5]}"


def test_the_pages_load_nothing_missing_and_nothing_from_elsewhere(pages, served, site):
    _, missing = served
    assert not missing, f"requests the site could not answer: {sorted(set(missing))[:10]}"
    for path in pages:
        page = (site / path / "index.html").read_text()
        external = re.findall(r'<(?:script|link|img)\b[^>]*(?:src|href)="(https?:)?//[^"]*"', page)
        assert not external, f"{path} loads from another host: {external[:3]}"


@pytest.mark.parametrize("name", TUTORIALS)
def test_each_tutorial_page_shows_its_outputs_and_figures_and_no_error(pages, site, name):
    assert f"tutorials/{name}" in pages, f"{name} has no page"
    dom = pages[f"tutorials/{name}"][1]
    assert dom.count.get(".jp-OutputArea-output", 0) > 0, f"{name}: no output shown"
    assert "Traceback" not in dom.text, name
    assert dom.count.get("[application/vnd.jupyter.stderr]", 0) == 0, f"{name}: error output"
    assert len(dom.images) == PICTURES.get(name, 0), (name, len(dom.images))
    for src in dom.images:
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, f"{name}: a blank picture"
    assert (site / "tutorials" / f"{name}.py").exists() or \
        (site / "tutorials" / name / f"{name}.py").exists(), f"{name}: no download of the source"


def test_tutorial_09s_page_shows_the_full_run(pages):
    dom = pages["tutorials/09_training_and_masks"][1]
    assert "come from a full run" in dom.text
    run = re.search(r"(\d+) iterations, train loss [\d.]+, test accuracy (\d+\.\d+)%", dom.output)
    assert run, "no training summary on the page"
    assert int(run.group(1)) == 800 and float(run.group(2)) > 93, run.group(0)


@pytest.mark.parametrize("name", STORED)
def test_a_stored_run_is_its_tutorials_cells_run_in_full(docs_python, name):
    """The stored notebook holds the .py's cells exactly (so a changed tutorial must be stored
    again: docs/execute_tutorials.py), ran in full (not the fast mode) without an error."""
    script = f"""
import json, jupytext, nbformat
stored = nbformat.read({str(ROOT / 'tutorials' / (name + '.ipynb'))!r}, 4)
source = jupytext.read({str(ROOT / 'tutorials' / (name + '.py'))!r})
cells = lambda nb: [(c.cell_type, c.source) for c in nb.cells if "stored-run" not in c.metadata.get("tags", [])]
errors = [o for c in stored.cells if c.cell_type == "code" for o in c.get("outputs", [])
          if o.get("output_type") == "error" or o.get("name") == "stderr"]
print(json.dumps(dict(same=cells(stored) == cells(source), errors=len(errors),
                      note=[c.source for c in stored.cells if "stored-run" in c.metadata.get("tags", [])],
                      meta=stored.metadata.get("minirattn", {{}}))))
"""
    out = subprocess.run([str(docs_python), "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    assert got["same"], f"{name}.ipynb is not {name}.py's cells: python docs/execute_tutorials.py {name[:2]}"
    assert got["errors"] == 0 and len(got["note"]) == 1 and got["meta"].get("commit")
    assert "full run" in got["note"][0] and "with uncommitted changes" not in got["note"][0]
