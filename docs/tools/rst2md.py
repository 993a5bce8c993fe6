"""reStructuredText bits of uniopt's docstrings, as the Markdown the site renders.

uniopt's docstrings are Google style (``Args:``) with a few reST constructs, chiefly the
equations: ``.. math::`` blocks and ``:math:`` roles. :func:`rst_to_markdown` turns those
into arithmatex math (``$$ ... $$`` and ``$ ... $``, typeset by MathJax), cross-reference
roles (``:class:`uniopt.Adam```) into optional autorefs (a link where the target is
documented, plain code otherwise), ````code```` into `code`, ```text <url>`_`` into
links and ``::`` literal blocks into fenced code.

:class:`RstToMarkdown` is the griffe extension that applies it to every docstring the
API reference renders (``mkdocs.yml``: mkdocstrings ``extensions``); the page
generators (``docgen.py``) use the same function.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from typing import Any

try:  # the docs build has griffe; the tests import this module without needing it
    from griffe import Extension
except ImportError:  # pragma: no cover
    Extension = object  # type: ignore[assignment,misc]

_MATH_DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. math::\s*$")
_LITERAL_INTRO = re.compile(r"^(?P<text>.*?)(?P<sep>\s*)::\s*$")
_DOUBLE_BACKTICKS = re.compile(r"``(.+?)``", re.S)
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_XREF_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj):`~?([^`]+)`")
_LINK = re.compile(r"`([^`<]+?)\s*<([^>`]+)>`__?")
_PLACEHOLDER = "\x00{}\x00"

Resolver = Callable[[str], "str | None"]


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip())


def math_block(body: str, indent: str = "") -> list[str]:
    """A display equation as arithmatex block lines; reST's multi-line ``&``-aligned
    bodies become an ``aligned`` environment."""
    lines = [line for line in textwrap.dedent(body).splitlines() if line.strip()]
    tex = "\n".join(lines)
    if "&" in tex or "\\\\" in tex:
        lines = ["\\begin{aligned}", *lines, "\\end{aligned}"]
    return ["", indent + "$$", *(indent + line for line in lines), indent + "$$", ""]


def _inline(text: str, resolve: Resolver | None = None) -> str:
    """Inline reST on one piece of prose (no block structure)."""
    saved: list[str] = []

    def keep(replacement: str) -> str:
        saved.append(replacement)
        return _PLACEHOLDER.format(len(saved) - 1)

    def code(match: re.Match) -> str:
        content = match.group(1)
        return keep(f"`` {content} ``" if "`" in content else f"`{content}`")

    def math(match: re.Match) -> str:
        return keep(f"${match.group(1).strip()}$")

    def xref(match: re.Match) -> str:
        target = match.group(1).strip()
        title = (
            target.rsplit(".", 1)[-1] if match.group(0).split("`")[1].startswith("~") else target
        )
        if "." not in target:  # a name relative to the docstring's scope
            target = resolve(target) if resolve else None
            if target is None:
                return keep(f"`{title}`")
        return keep(f'<autoref identifier="{target}" optional><code>{title}</code></autoref>')

    def link(match: re.Match) -> str:
        return keep(f"[{match.group(1).strip()}]({match.group(2).strip()})")

    text = _DOUBLE_BACKTICKS.sub(code, text)
    text = _MATH_ROLE.sub(math, text)
    text = _XREF_ROLE.sub(xref, text)
    text = _LINK.sub(link, text)
    return re.sub("\x00(\\d+)\x00", lambda m: saved[int(m.group(1))], text)


def rst_to_markdown(text: str, resolve: Resolver | None = None) -> str:
    """Convert the reST constructs of a (dedented) docstring to Markdown.

    ``resolve(name)`` qualifies a cross-reference without a dot (``:func:`join```) to a
    full path, or returns None: it is then shown as code, without a link."""
    lines = text.splitlines()
    out: list[str] = []
    prose: list[str] = []  # inline markup may span lines: converted a run at a time

    def flush() -> None:
        if prose:
            out.extend(_inline("\n".join(prose), resolve).split("\n"))
            prose.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        directive = _MATH_DIRECTIVE.match(line)
        literal = None if directive else _LITERAL_INTRO.match(line)
        if directive or (literal and line.strip() and _block_follows(lines, i)):
            indent = _indent_of(line)
            body, i = _indented_block(lines, i + 1, indent)
            pad = " " * indent
            if directive:
                flush()
                out.extend(math_block(body, pad))
                continue
            intro = literal.group("text")
            if intro.strip():
                prose.append(intro + ":")
            flush()
            out += ["", pad + "```python", *(pad + x for x in textwrap.dedent(body).splitlines())]
            out += [pad + "```", ""]
            continue
        prose.append(line)
        i += 1
    flush()
    return "\n".join(out).strip("\n") + ("\n" if text.endswith("\n") else "")


def _block_follows(lines: list[str], i: int) -> bool:
    """Whether an indented block follows line ``i`` (after blank lines)."""
    indent = _indent_of(lines[i])
    for line in lines[i + 1 :]:
        if line.strip():
            return _indent_of(line) > indent
    return False


def _indented_block(lines: list[str], start: int, indent: int) -> tuple[str, int]:
    """The block indented deeper than ``indent`` from ``start``; returns it and the
    index after it (trailing blank lines stay outside)."""
    end = start
    last = start
    while end < len(lines) and (not lines[end].strip() or _indent_of(lines[end]) > indent):
        if lines[end].strip():
            last = end + 1
        end += 1
    body = "\n".join(lines[start:last])
    return body.strip("\n"), last


class RstToMarkdown(Extension):  # type: ignore[misc,valid-type]
    """griffe extension: every docstring, reST math and roles to Markdown."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:  # noqa: D102
        docstring = getattr(obj, "docstring", None)
        if docstring is not None and docstring.value:
            docstring.value = rst_to_markdown(docstring.value, _resolver(obj))


def _resolver(obj: Any) -> Resolver:
    """Names relative to ``obj``: its own members, its parent's, its module's."""

    def resolve(name: str) -> str | None:
        scopes = [obj, getattr(obj, "parent", None), getattr(obj, "module", None)]
        for scope in scopes:
            members = getattr(scope, "members", None) or {}
            if name in members:
                return f"{scope.path}.{name}"
        return None

    return resolve
