"""The documentation: the site builds strictly, its equations render in a real browser,
every Python block of README.md and docs/ runs, and the generated parts are current.

Python blocks: the blocks of one file run in order, in one namespace, in a fresh
interpreter whose working directory is a temporary folder. A block whose first line is
``# requires: NAME[, NAME]`` runs only where each NAME is available (``cupy`` and
``gpu``: CuPy with a CUDA device; anything else: an importable module); a block right
after ``<!-- skip: reason -->`` is not run (excerpts of files, fragments of a session).
README's CuPy block, which has no marker, counts as ``# requires: cupy``.
"""

from __future__ import annotations

import html.parser
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TOOLS = DOCS / "tools"

FENCE = re.compile(
    r"(?P<skip><!--\s*skip:(?P<reason>.*?)-->[ \t]*\n(?:[ \t]*\n)?)?"
    r"^(?P<indent>[ \t]*)```python[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.S | re.M,
)
REQUIRES = re.compile(r"^\s*#\s*requires:\s*(.+)$", re.M)


def markdown_files() -> list[Path]:
    """README.md and the pages of docs/ that have Python blocks."""
    files = [ROOT / "README.md"]
    files += sorted(p for p in DOCS.rglob("*.md") if TOOLS not in p.parents)
    return [p for p in files if "```python" in p.read_text()]


def python_blocks(text: str) -> list[dict]:
    """Every ```python block: its code (dedented), first line number, skip reason and
    requirements."""
    blocks = []
    for m in FENCE.finditer(text):
        code = textwrap.dedent(m.group("body"))
        requires = []
        first = code.lstrip().splitlines()[0] if code.strip() else ""
        if (req := REQUIRES.match(first)) is not None:
            requires = [r.strip() for r in req.group(1).split(",") if r.strip()]
        if re.search(r"^\s*import cupy|^\s*from cupy", code, re.M) and "cupy" not in requires:
            requires.append("cupy")
        blocks.append(
            {
                "code": code,
                "line": text.count("\n", 0, m.start("body")) + 1,
                "skip": m.group("reason").strip() if m.group("skip") else None,
                "requires": requires,
            }
        )
    return blocks


def _cupy_gpu() -> bool:
    from uniopt.parity.arrays import BACKENDS

    return BACKENDS["cupy"].available()


def missing(requirements: list[str]) -> list[str]:
    out = []
    for name in requirements:
        if name in ("cupy", "gpu"):
            if not _cupy_gpu():
                out.append(f"{name} (CuPy with a CUDA device)")
        elif importlib.util.find_spec(name) is None:
            out.append(name)
    return out


RUNNER = textwrap.dedent(
    """
    import json, sys, traceback
    blocks = json.load(open(sys.argv[1]))
    namespace = {"__name__": "__main__"}
    for block in blocks:
        try:
            exec(compile(block["code"], block["where"], "exec"), namespace)
        except BaseException:
            traceback.print_exc()
            print("FAILED:", block["where"], file=sys.stderr)
            sys.exit(1)
        print("ran", block["where"])
    """
)


def run_blocks(blocks: list[dict], tmp_path: Path, label: str) -> subprocess.CompletedProcess:
    import json

    spec = tmp_path / "blocks.json"
    spec.write_text(json.dumps(blocks))
    runner = tmp_path / "run_blocks.py"
    runner.write_text(RUNNER)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, str(runner), str(spec)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


# ---- every Python block of README.md and docs/ runs ---------------------------------


@pytest.mark.parametrize(
    "path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)).replace(os.sep, "/")
)
def test_python_blocks_run(path: Path, tmp_path: Path):
    relative = path.relative_to(ROOT)
    blocks = python_blocks(path.read_text())
    runnable, skipped = [], []
    for b in blocks:
        where = f"{relative}:{b['line']}"
        if b["skip"] is not None:
            skipped.append(f"{where} ({b['skip']})")
        elif absent := missing(b["requires"]):
            skipped.append(f"{where} (needs {', '.join(absent)})")
            compile(b["code"], where, "exec")  # at least valid Python
        else:
            runnable.append({"code": b["code"], "where": where})
    if not runnable:
        pytest.skip(f"no runnable python block in {relative}: skipped {skipped or 'none'}")
    done = run_blocks(runnable, tmp_path, str(relative))
    assert done.returncode == 0, f"{relative}:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


def test_block_markers_are_understood():
    text = textwrap.dedent(
        """
        ```python
        x = 1
        ```

        <!-- skip: an excerpt -->
        ```python
        undefined_name
        ```

        * a list item:

          ```python
          y = x + 1
          ```

        ```python
        # requires: cupy
        import cupy
        ```
        """
    )
    blocks = python_blocks(text)
    assert [b["skip"] for b in blocks] == [None, "an excerpt", None, None]
    assert blocks[2]["code"] == "y = x + 1\n"
    assert blocks[3]["requires"] == ["cupy"]
    assert missing(["sys", "no_such_module_here"]) == ["no_such_module_here"]


def test_generated_optimizer_examples_run(tmp_path: Path):
    """The example on each generated optimizer page runs."""
    docgen = _docgen()
    blocks = []
    for slug, class_name, functional_name in docgen.OPTIMIZERS:
        page = docgen.optimizer_page(class_name, functional_name)
        for b in python_blocks(page):
            blocks.append({"code": b["code"], "where": f"optimizers/{slug}.md:{b['line']}"})
    assert len(blocks) >= len(docgen.OPTIMIZERS)
    done = run_blocks(blocks, tmp_path, "optimizer pages")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]


# ---- generated content is current ---------------------------------------------------


def _docgen():
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    import docgen

    return docgen


def test_every_registry_algorithm_has_a_page_in_the_nav():
    from uniopt.parity.cases import CLASSES

    docgen = _docgen()
    pages = {cls: slug for slug, cls, _ in docgen.OPTIMIZERS}
    assert set(CLASSES.values()) <= set(pages), "add the algorithm to OPTIMIZERS in docgen.py"
    nav = (ROOT / "mkdocs.yml").read_text()
    for slug in pages.values():
        assert f"optimizers/{slug}.md" in nav, f"optimizers/{slug}.md is not in mkdocs.yml's nav"


def test_every_schedule_has_a_section_a_plot_and_a_nav_entry():
    from uniopt import schedules

    docgen = _docgen()
    sections = docgen.schedule_sections((DOCS / "schedules.md").read_text())
    plotted = set(docgen.plotted_schedules())
    factories = {
        name
        for name in schedules.__all__
        if callable(getattr(schedules, name)) and name not in ("Schedule", "one_cycle_momentum")
    }
    assert factories <= set(sections), (
        f"schedules without a section in docs/schedules.md: {sorted(factories - set(sections))}"
    )
    assert set(sections) <= plotted, (
        f"add plots to _plot_specs() in docs/tools/docgen.py: {sorted(set(sections) - plotted)}"
    )
    nav = (ROOT / "mkdocs.yml").read_text()
    assert all(f"schedules/{name}.md" in nav for name in sections)
    png = docgen.schedule_plot("cosine_warm_restarts")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_parity_output_lists_the_registry_cases():
    """docs/parity-output.txt (the docs' parity table) is current: it has a row for each
    registry case on each backend and face. Regenerate: python docs/tools/gen_parity.py"""
    from uniopt.parity.arrays import BACKENDS
    from uniopt.parity.cases import CASES
    from uniopt.parity.runner import RUNNERS

    docgen = _docgen()
    text = (DOCS / "parity-output.txt").read_text()
    rows = docgen.parse_parity(text)
    assert "uniopt parity: 20 steps, float64" in text
    assert re.search(r"^\d+ passed, 0 failed$", text, re.M), "the committed table has failures"
    backends = {r["backend"] for r in rows}
    assert {"numpy", "torch", "jax", "array_api_strict"} <= backends <= set(BACKENDS)
    got = {(r["case"], r["backend"], r["face"]) for r in rows}
    expected = {(c.id, b, f) for c in CASES for b in backends for f in RUNNERS}
    stale = sorted({c for c, _, _ in got - expected})
    new = sorted({c for c, _, _ in expected - got})
    assert not stale and not new, (
        f"docs/parity-output.txt is stale (cases gone: {stale}, new: {new}); "
        "run python docs/tools/gen_parity.py"
    )
    table = docgen.parity_markdown(text)
    assert table.count("| `adamw-default` |") == 1 and "vs `torch.optim`" in table


def test_rst_math_and_roles_become_markdown():
    sys.path.insert(0, str(TOOLS))
    from rst2md import rst_to_markdown

    text = textwrap.dedent(
        r"""
        Summary.

        .. math::

            a &= b \\
            c &= \frac{d}{e}

        With :math:`\eta` and :math:`\frac{1}{2}
        x`, see :class:`uniopt.Adam` and :func:`helper`; ``code`` and
        `a link <https://example.org>`_. Example::

            x = 1
        """
    )
    out = rst_to_markdown(text, resolve=lambda name: None)
    assert "$$\n\\begin{aligned}\na &= b \\\\\nc &= \\frac{d}{e}\n\\end{aligned}\n$$" in out
    assert "$\\eta$" in out and "$\\frac{1}{2}\nx$" in out
    assert '<autoref identifier="uniopt.Adam" optional><code>uniopt.Adam</code></autoref>' in out
    assert "`helper`" in out and "`code`" in out and "[a link](https://example.org)" in out
    assert "Example:\n\n```python\nx = 1\n```" in out
    assert ":math:" not in out and ".. math::" not in out


# ---- the site builds, and its equations render --------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python", "mathjax", "matplotlib"):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            pytest.skip(f'the docs build needs {module}: pip install -e ".[docs]"')
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", "mkdocs.yml", "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "MPLBACKEND": "Agg"},
    )
    assert done.returncode == 0, "mkdocs build --strict failed:\n" + done.stderr[-8000:]
    return out


def test_site_has_every_page(site: Path):
    docgen = _docgen()
    assert (site / "index.html").is_file()
    assert (site / "assets" / "mathjax" / "tex-svg.js").stat().st_size > 1_000_000
    for slug, class_name, _ in docgen.OPTIMIZERS:
        page = (site / "optimizers" / f"{slug}.html").read_text()
        assert "<h1 id=" in page and class_name in page
        assert 'class="arithmatex"' in page, f"no equation on the {class_name} page"
    for name in docgen.plotted_schedules():
        assert (site / "schedules" / f"{name}.png").is_file()
        assert f'src="{name}.png"' in (site / "schedules" / f"{name}.html").read_text()
    parity = (site / "parity.html").read_text()
    assert "adamw-default" in parity and "torch.optim" in parity
    api = (site / "api" / "optimizers.html").read_text()
    assert 'id="uniopt.AdamW"' in api and "arithmatex" in api  # docstring math converted
    assert ":math:" not in api and ".. math::" not in api
    for page in [*site.glob("api/*.html"), *site.glob("optimizers/*.html")]:
        assert ":math:`" not in page.read_text(), f"unconverted reST math in {page}"


def chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and (found := shutil.which(name)):
            return found
    return None


class _VisibleText(html.parser.HTMLParser):
    """Text a reader sees: no scripts, styles, SVG internals or MathJax's hidden MathML."""

    HIDDEN = {"script", "style", "svg", "mjx-assistive-mml", "template", "noscript"}

    def __init__(self):
        super().__init__()
        self.depth, self.parts = 0, []

    def handle_starttag(self, tag, attrs):
        if tag in self.HIDDEN:
            self.depth += 1

    def handle_endtag(self, tag):
        if tag in self.HIDDEN and self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if not self.depth:
            self.parts.append(data)


def rendered_dom(browser: str, page: Path, tmp_path: Path) -> str:
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "<html" in done.stdout, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("page", ["index.html", "optimizers/adamw.html"])
def test_equations_render_in_a_browser(site: Path, page: str, tmp_path: Path):
    browser = chromium()
    if browser is None:
        pytest.skip("no chromium binary (apt-get install chromium, or set CHROMIUM=/path)")
    dom = rendered_dom(browser, site / page, tmp_path)
    math = dom.count('class="arithmatex"')
    typeset = len(re.findall(r"<mjx-container[^>]*jax=\"SVG\"", dom))
    assert math >= 1, f"{page} has no equation"
    assert typeset >= math, f"{page}: {typeset} of {math} equations typeset by MathJax"
    assert "data-mjx-error" not in dom and "<mjx-merror" not in dom, "a TeX error"
    text = _VisibleText()
    text.feed(dom)
    visible = "".join(text.parts)
    for raw in ("\\frac", "\\begin{aligned}", "$$", "\\(", "\\[", "\\leftarrow", "\\beta"):
        assert raw not in visible, f"raw TeX {raw!r} left in {page}"
