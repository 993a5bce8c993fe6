"""MkDocs hooks (``mkdocs.yml``: ``hooks``): the pages and files generated at build time.

* ``optimizers/<name>.md``: one page per optimizer, from its code (``docgen.py``);
* ``schedules/<name>.md`` and ``schedules/<name>.png``: one page per schedule, its
  section of ``schedules.md`` and a matplotlib plot;
* ``assets/mathjax/tex-svg.js``: MathJax 3 (SVG output, fonts built in) and its TeX
  extensions, copied from the ``django-static-mathjax`` package so the site typesets
  equations offline;
* ``<!-- uniopt:parity -->`` in ``parity.md``: the table from ``docs/parity-output.txt``
  (regenerate it with ``python docs/tools/gen_parity.py``), or from a live run of
  ``python -m uniopt parity`` when ``UNIOPT_DOCS_PARITY=live``;
* ``<!-- uniopt:base-options -->`` in ``optimizers/index.md``: the options every
  optimizer takes, from ``uniopt.Optimizer``'s signature and docstring;
* ``<!-- uniopt:benchmark -->`` in ``performance.md``: ``docs/benchmark-output.txt``,
  the committed output of the benchmark on the machine named in it, or a fresh run of
  ``python benchmarks/step_time.py --sets small`` when ``UNIOPT_DOCS_BENCH=1``.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

TOOLS = Path(__file__).resolve().parent
if str(TOOLS) not in sys.path:  # docgen, rst2md, and the griffe extension (mkdocs.yml)
    sys.path.insert(0, str(TOOLS))

import docgen  # noqa: E402

log = logging.getLogger("mkdocs.plugins.uniopt")

MATHJAX = "assets/mathjax/tex-svg.js"
PARITY_OUTPUT = docgen.DOCS / "parity-output.txt"
BENCHMARK_OUTPUT = docgen.DOCS / "benchmark-output.txt"
PARITY_COMMAND = ["-m", "uniopt", "parity", "--steps", "20", "--flavors"]


def _mathjax_source() -> Path:
    try:
        import mathjax  # the django-static-mathjax distribution
    except ImportError:
        mathjax = None
    path = (
        None
        if mathjax is None
        else (Path(mathjax.__file__).parent / "static" / "mathjax" / "es5" / "tex-svg.js")
    )
    if path is None or not path.is_file():
        raise RuntimeError(
            "MathJax not found: the docs build copies it from the django-static-mathjax "
            'package; install the docs extra (pip install -e ".[docs]")'
        )
    return path


def on_files(files: Files, config, **kwargs) -> Files:  # noqa: ANN001
    def add(src_uri: str, **source) -> None:
        files.append(File.generated(config, src_uri, **source))

    mathjax = _mathjax_source()
    add(MATHJAX, abs_src_path=str(mathjax))
    # TeX extensions MathJax loads on demand ([tex]/textmacros, autoloaded macros)
    for extension in sorted((mathjax.parent / "input" / "tex" / "extensions").glob("*.js")):
        add(f"assets/mathjax/input/tex/extensions/{extension.name}", abs_src_path=str(extension))

    for slug, class_name, functional_name in docgen.OPTIMIZERS:
        add(f"optimizers/{slug}.md", content=docgen.optimizer_page(class_name, functional_name))

    sections = docgen.schedule_sections((docgen.DOCS / "schedules.md").read_text())
    plotted = set(docgen.plotted_schedules())
    for name, section in sections.items():
        if name in plotted:
            add(f"schedules/{name}.png", content=docgen.schedule_plot(name))
        else:
            log.warning(
                "schedule %r has a section in schedules.md but no plot: add it to "
                "_plot_specs() in docs/tools/docgen.py",
                name,
            )
        add(
            f"schedules/{name}.md",
            content=docgen.schedule_page(name, section, has_plot=name in plotted),
        )
    return files


def _parity_output() -> tuple[str, str]:
    if os.environ.get("UNIOPT_DOCS_PARITY") == "live":
        text = docgen.run_command([sys.executable, *PARITY_COMMAND])
        return text, "a live run during this build"
    if not PARITY_OUTPUT.is_file():
        log.warning("docs/parity-output.txt is missing: run python docs/tools/gen_parity.py")
        return "", ""
    return PARITY_OUTPUT.read_text(), "`docs/parity-output.txt` (committed)"


def _benchmark() -> str:
    if os.environ.get("UNIOPT_DOCS_BENCH") == "1":
        argv = [sys.executable, "benchmarks/step_time.py", "--sets", "small", "--no-compile"]
        text = docgen.run_command(argv, timeout=600)
        machine = (
            f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"
        )
        command = "python benchmarks/step_time.py --sets small --no-compile"
        return f"A fresh run of `{command}` ({machine}):\n\n```text\n{text.strip()}\n```"
    if not BENCHMARK_OUTPUT.is_file():
        return "*(no committed benchmark output)*"
    return f"```text\n{BENCHMARK_OUTPUT.read_text().strip()}\n```"


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:  # noqa: ANN001
    if "<!-- uniopt:parity -->" in markdown:
        text, source = _parity_output()
        table = docgen.parity_markdown(text) if text else "*(no parity output)*"
        if source:
            table = f"From {source}:\n\n" + table
        markdown = markdown.replace("<!-- uniopt:parity -->", table)
    if "<!-- uniopt:base-options -->" in markdown:
        markdown = markdown.replace("<!-- uniopt:base-options -->", docgen.base_options_table())
    if "<!-- uniopt:benchmark -->" in markdown:
        markdown = markdown.replace("<!-- uniopt:benchmark -->", _benchmark())
    return markdown
