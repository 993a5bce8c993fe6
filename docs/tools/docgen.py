"""Pages the docs build generates from the code, so they cannot go stale.

* one page per optimizer (:func:`optimizer_page`): its equation (the module docstring),
  every option with its default and the flavor presets that change it, the presets
  (``Rule.flavors``), the functional twin's signature, a runnable example, the parity
  cases of the registry and the references;
* one page per learning-rate schedule (:func:`schedule_page`): its section of
  ``docs/schedules.md`` and a plot drawn with matplotlib (:func:`schedule_plot`);
* the parity table (:func:`parity_markdown`) from ``python -m uniopt parity`` output.

``hooks.py`` calls these during ``mkdocs build``; ``tests/test_docs.py`` imports them
to run the generated examples.
"""

from __future__ import annotations

import inspect
import io
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rst2md import rst_to_markdown

DOCS = Path(__file__).resolve().parent.parent
ROOT = DOCS.parent

#: (page slug, class name, functional name), in the order of the navigation
OPTIMIZERS = [
    ("sgd", "SGD", "sgd"),
    ("adam", "Adam", "adam"),
    ("adamw", "AdamW", "adamw"),
    ("adagrad", "Adagrad", "adagrad"),
    ("rmsprop", "RMSprop", "rmsprop"),
    ("lamb", "LAMB", "lamb"),
    ("lars_momentum", "LarsMomentum", "lars_momentum"),
    ("nadam", "NAdam", "nadam"),
    ("nadamw", "NAdamW", "nadamw"),
    ("radam", "RAdam", "radam"),
    ("adamax", "Adamax", "adamax"),
    ("adamaxw", "AdamaxW", "adamaxw"),
    ("adabelief", "AdaBelief", "adabelief"),
    ("yogi", "Yogi", "yogi"),
    ("adan", "Adan", "adan"),
    ("optimistic_adam", "OptimisticAdam", "optimistic_adam"),
    ("lookahead", "LookAhead", "lookahead"),
]

#: constructor arguments of each page's example (besides ``params``)
EXAMPLE_OPTIONS = {
    "SGD": "lr=0.1, momentum=0.9, nesterov=True",
    "Adam": "lr=0.1",
    "AdamW": "lr=0.1, weight_decay=1e-2",
    "Adagrad": "lr=0.5",
    "RMSprop": "lr=0.01, momentum=0.9",
    "LAMB": "lr=0.1, weight_decay=1e-2",
    "NAdam": "lr=0.1",
    "NAdamW": "lr=0.1, weight_decay=1e-2",
    "RAdam": "lr=0.1",
    "Adamax": "lr=0.1",
    "AdamaxW": "lr=0.1, weight_decay=1e-2",
    "AdaBelief": "lr=0.1",
    "Yogi": "lr=0.1",
    "Adan": "lr=0.1, weight_decay=1e-2",
    "OptimisticAdam": "lr=0.1",
    "LarsMomentum": "lr=0.1, momentum=0.9",
}

_REFERENCE = re.compile(r"^References?:\s*", re.M)


def _uniopt() -> Any:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import uniopt

    return uniopt


# ---- optimizers ---------------------------------------------------------------------


def base_options() -> list[tuple[str, str]]:
    """``(name, description)`` of the keyword options every optimizer takes, from the
    bullet list of :class:`uniopt.Optimizer`'s docstring (in signature order)."""
    uniopt = _uniopt()
    doc = inspect.cleandoc(uniopt.Optimizer.__doc__ or "")
    described = {}
    for item in re.findall(r"^\* ``(\w+)``: (.*?)(?=^\* |^\s*$|\Z)", doc, re.M | re.S):
        described[item[0]] = rst_to_markdown(" ".join(item[1].split())).rstrip(";.")
    signature = inspect.signature(uniopt.Optimizer.__init__)
    names = [n for n, p in signature.parameters.items() if p.kind is p.KEYWORD_ONLY]
    return [(n, described.get(n, "")) for n in names]


def base_options_table() -> str:
    """The base options as a Markdown table, plus ``flavor``."""
    from uniopt.flavors import FLAVORS

    rows = ["| option | meaning |", "|---|---|"]
    for name, text in base_options():
        text = text.replace("|", "\\|")
        rows.append(f"| `{name}` | {text} |")
    flavors = ", ".join(f'`"{f}"`' for f in FLAVORS)
    rows.append(f"| `flavor` | reproduce a framework's numerics and defaults: {flavors} |")
    return "\n".join(rows)


def parse_args_section(doc: str) -> dict[str, str]:
    """``name -> description`` from a Google-style ``Args:`` section (continuation
    lines joined), reST converted to Markdown."""
    out: dict[str, str] = {}
    lines = inspect.cleandoc(doc).splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    except StopIteration:
        return out
    current = None
    for line in lines[start + 1 :]:
        if not line.strip():
            if current is None:
                continue
            break
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            break
        match = re.match(r"^\s{4}(\*{0,2}\w+):\s*(.*)$", line)
        if match and indent == 4:
            current = match.group(1).lstrip("*")
            out[current] = match.group(2).strip()
        elif current is not None:
            out[current] += " " + line.strip()
    return {k: rst_to_markdown(v) for k, v in out.items()}


def _default(value: Any) -> Any:
    return getattr(value, "value", value)  # uniopt.flavors.Default shows its value


def _preset_text(preset: dict[str, Any]) -> str:
    parts = [f"`{k}={v!r}`" for k, v in preset.items() if k != "float32"]
    rounded = preset.get("float32")
    if rounded:
        names = (
            "momentum, weight_decay (when momentum is set)"
            if callable(rounded)
            else ", ".join(rounded)
        )
        parts.append(f"float32: {names}")
    return "<br>".join(parts) or "defaults"


def _split_docstring(doc: str) -> tuple[str, str, list[str]]:
    """(summary, body, references) of a module docstring."""
    doc = inspect.cleandoc(doc)
    summary, _, body = doc.partition("\n\n")
    paragraphs = body.split("\n\n")
    references = [p for p in paragraphs if _REFERENCE.match(p)]
    body = "\n\n".join(p for p in paragraphs if not _REFERENCE.match(p))
    refs: list[str] = []
    for p in references:
        text = " ".join(_REFERENCE.sub("", p).split())
        refs += [r.strip() for r in re.split(r";\s+(?=[A-Z])", text) if r.strip()]
    return summary.replace("\n", " "), body, refs


def optimizer_example(class_name: str, functional_name: str) -> str:
    """A small runnable NumPy example of both faces."""
    if class_name == "LookAhead":
        stateful = "uniopt.LookAhead(uniopt.SGD(params, lr=0.1), alpha=0.5, k=5)"
        transform = "uniopt.lookahead(uniopt.sgd(lr=0.1), alpha=0.5, k=5)"
    else:
        options = EXAMPLE_OPTIONS.get(class_name, "")
        stateful = (
            f"uniopt.{class_name}(params, {options})"
            if options
            else (f"uniopt.{class_name}(params)")
        )
        transform = f"uniopt.{functional_name}({options})"
    return f"""```python
import numpy as np
import uniopt

# minimise f(w) = |w - 1|^2 (gradient 2 (w - 1)) with the stateful face ...
params = {{"w": np.array([3.0, -2.0, 0.5])}}
opt = {stateful}
for _ in range(50):
    opt.step({{"w": 2 * (opt.params["w"] - 1.0)}})
print(opt.params["w"])

# ... and with the functional face (the same rule, pure: jit-able under jax)
params = {{"w": np.array([3.0, -2.0, 0.5])}}
tx = {transform}
state = tx.init(params)
for _ in range(50):
    updates, state = tx.update({{"w": 2 * (params["w"] - 1.0)}}, state, params)
    params = uniopt.apply_updates(params, updates)
print(params["w"])
```"""


def _plain_signature(function: Any) -> str:
    """``(a=1, b=2)``: the signature without annotations."""
    signature = inspect.signature(function)
    parameters = [p.replace(annotation=p.empty) for p in signature.parameters.values()]
    return str(signature.replace(parameters=parameters, return_annotation=signature.empty))


def _parity_cases(algorithm: str) -> list[str]:
    from uniopt.parity.cases import CASES

    rows = []
    for case in CASES:
        if case.algorithm != algorithm:
            continue
        options = ", ".join(f"{k}={v!r}" for k, v in case.options.items())
        twins = ["NumPy float64 oracle"]
        if case.torch is not None:
            twins.append("`torch.optim`")
        if case.optax is not None:
            twins.append(f"`optax.{case.optax[0]}`")
        rows.append(f"| `{case.id}` | `{options}` | {', '.join(twins)} |")
    if not rows:
        return []
    return ["| case | options | compared with |", "|---|---|---|", *rows]


def optimizer_page(class_name: str, functional_name: str) -> str:
    """The Markdown page of one optimizer, generated from its code."""
    uniopt = _uniopt()
    from uniopt.flavors import FLAVORS

    cls = getattr(uniopt, class_name)
    module = sys.modules[cls.__module__]
    summary, body, references = _split_docstring(module.__doc__ or "")
    args: dict[str, str] = {}
    for base in reversed(cls.__mro__):  # AdamW documents "same arguments as Adam"
        if base.__module__.startswith("uniopt.algorithms"):
            args.update(parse_args_section(base.__doc__ or ""))
    rule = getattr(cls, "rule", None)
    presets: dict[str, dict[str, Any]] = dict(getattr(rule, "flavors", {}) or {})
    if class_name == "LookAhead":
        presets = {}

    lines = [f"# {class_name}", "", rst_to_markdown(summary), ""]
    lines += ["## The update", "", rst_to_markdown(body), ""]

    if class_name == "LookAhead":
        intro = (
            "`uniopt.LookAhead(...)` takes these arguments; the functional "
            "`uniopt.lookahead(inner, ...)` takes an inner transform instead of an optimizer."
        )
    else:
        intro = (
            f"`uniopt.{class_name}(...)` takes these arguments (the functional "
            f"`uniopt.{functional_name}(...)` the same ones, without `params`). A default "
            "marked with flavors is replaced by that flavor's preset unless you pass the "
            "argument yourself."
        )
    lines += [
        "## Options",
        "",
        intro,
        "",
        "| argument | default | description | flavor presets |",
        "|---|---|---|---|",
    ]
    signature = inspect.signature(cls.__init__)
    for name, parameter in signature.parameters.items():
        if name == "self" or parameter.kind is parameter.VAR_KEYWORD:
            continue
        if parameter.default is parameter.empty:
            default = "required"
        else:
            default = f"`{_default(parameter.default)!r}`"
        changed = [
            f"{flavor}: `{preset[name]!r}`"
            for flavor, preset in presets.items()
            if name in preset and preset[name] != _default(parameter.default)
        ]
        rounded = [
            flavor
            for flavor, preset in presets.items()
            if not callable(preset.get("float32", ())) and name in preset.get("float32", ())
        ]
        if rounded:
            changed.append("float32 in " + ", ".join(rounded))
        description = args.get(name, "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{name}` | {default} | {description} | {'<br>'.join(changed)} |")
    if class_name != "LookAhead":
        names = ", ".join(f"`{name}`" for name, _ in base_options())
        lines += [
            "",
            f"Every optimizer also takes the base options {names}, and param groups: see "
            "[the overview](index.md#options-every-optimizer-takes). `lr` may be a number, "
            "a [schedule](../schedules.md), a 1-D array or list (one value per step) or an "
            "iterable.",
        ]

    lines += ["", "## Flavors", ""]
    if presets:
        lines += [
            f'`flavor="..."` presets of `{class_name}`, from `{rule.__name__}.flavors` (see '
            "[flavors](../flavors.md) for all algorithms). Explicit arguments win over the "
            "preset; float32 names hyperparameters that framework stores as float32, rounded "
            "the same way so float64 runs match it to the last bits.",
            "",
            "| flavor | preset |",
            "|---|---|",
        ]
        for flavor in FLAVORS:
            preset = presets.get(flavor)
            cell = (
                "— (the framework has no such optimizer)"
                if preset is None
                else (_preset_text(dict(preset)))
            )
            lines.append(f"| `{flavor}` | {cell} |")
    else:
        lines += [
            "LookAhead has no presets of its own: the inner optimizer carries the flavor "
            '(`uniopt.LookAhead(uniopt.AdamW(params, flavor="paddle"))`); `slow_init` '
            'chooses the paper\'s / optax\'s start (`"params"`) or Paddle\'s (`"first_step"`).',
        ]

    functional = getattr(uniopt, functional_name)
    lines += [
        "",
        "## Functional face",
        "",
        "```text",
        f"uniopt.{functional_name}{_plain_signature(functional)}",
        "```",
        "",
        "returns a [`Transform`](../api/functional.md) `(init, update)`, usable alone, under "
        "`jax.jit` / `torch.compile`, or inside `optax.chain`.",
        "",
        "## Example",
        "",
        optimizer_example(class_name, functional_name),
        "",
    ]
    cases = _parity_cases(getattr(cls, "algorithm", functional_name))
    if cases:
        lines += [
            "## Checked against",
            "",
            "The registry (`uniopt/parity/cases.py`) runs these option sets on every backend "
            "and both faces; see the [parity table](../parity.md).",
            "",
            *cases,
            "",
        ]
    if references:
        lines += ["## References", "", *(f"* {r}" for r in references), ""]
    lines += [
        "## API",
        "",
        f"[`uniopt.{class_name}`][uniopt.{class_name}] in the API reference.",
        "",
    ]
    return "\n".join(lines)


# ---- schedules ----------------------------------------------------------------------


def schedule_sections(markdown: str) -> dict[str, str]:
    """``name -> section body`` for every ``## name`` of ``schedules.md`` that is a
    factory of :mod:`uniopt.schedules`."""
    _uniopt()
    from uniopt import schedules

    names = set(schedules.__all__)
    out: dict[str, str] = {}
    parts = re.split(r"^## +(.+?)\s*$", markdown, flags=re.M)
    for title, body in zip(parts[1::2], parts[2::2]):
        if title in names:
            out[title] = body.strip("\n")
    return out


def _plot_specs() -> dict[str, tuple[int, list[tuple[str, Any]], list[tuple[str, Any]]]]:
    """name -> (steps, [(label, schedule)], [(label, schedule) on a second axis])."""
    from uniopt import schedules as s

    return {
        "constant": (
            100,
            [("constant(0.1, factor=0.5, total_iters=30)", s.constant(0.1, 0.5, 30))],
            [],
        ),
        "step_decay": (
            150,
            [("step_decay(0.1, step_size=30, gamma=0.5)", s.step_decay(0.1, 30, 0.5))],
            [],
        ),
        "multistep_decay": (
            150,
            [("multistep_decay(0.1, [30, 80], gamma=0.1)", s.multistep_decay(0.1, [30, 80], 0.1))],
            [],
        ),
        "exponential_decay": (
            150,
            [("exponential_decay(0.1, gamma=0.98)", s.exponential_decay(0.1, 0.98))],
            [],
        ),
        "inverse_time_decay": (
            150,
            [("inverse_time_decay(0.1, gamma=0.05)", s.inverse_time_decay(0.1, 0.05))],
            [],
        ),
        "natural_exp_decay": (
            150,
            [("natural_exp_decay(0.1, gamma=0.02)", s.natural_exp_decay(0.1, 0.02))],
            [],
        ),
        "polynomial_decay": (
            200,
            [
                ("decay_steps=50, power=2", s.polynomial_decay(0.1, 50, end_lr=1e-3, power=2.0)),
                ("... cycle=True", s.polynomial_decay(0.1, 50, end_lr=1e-3, power=2.0, cycle=True)),
            ],
            [],
        ),
        "linear": (
            100,
            [("linear(0.1, 0.1, 1.0, total_iters=50)", s.linear(0.1, 0.1, 1.0, 50))],
            [],
        ),
        "piecewise_decay": (
            100,
            [
                (
                    "piecewise_decay([20, 40, 60, 80], [0.2, 0.4, 0.6, 0.8, 1.0])",
                    s.piecewise_decay([20, 40, 60, 80], [0.2, 0.4, 0.6, 0.8, 1.0]),
                )
            ],
            [],
        ),
        "noam": (2000, [("noam(1.0, d_model=512, warmup_steps=400)", s.noam(1.0, 512, 400))], []),
        "cosine_annealing": (
            300,
            [
                (
                    "cosine_annealing(0.1, T_max=100, eta_min=1e-3)",
                    s.cosine_annealing(0.1, 100, 1e-3),
                )
            ],
            [],
        ),
        "cosine_decay": (
            300,
            [("cosine_decay(0.1, decay_steps=200, alpha=0.1)", s.cosine_decay(0.1, 200, 0.1))],
            [],
        ),
        "cosine_warm_restarts": (
            300,
            [
                ("T_0=20, T_mult=2", s.cosine_warm_restarts(0.1, 20, 2)),
                ("T_0=50, T_mult=1", s.cosine_warm_restarts(0.1, 50, 1)),
            ],
            [],
        ),
        "one_cycle": (
            300,
            [
                ("one_cycle(1.0, 300)", s.one_cycle(1.0, 300)),
                (
                    "three_phase=True, linear",
                    s.one_cycle(1.0, 300, anneal_strategy="linear", three_phase=True),
                ),
            ],
            [("one_cycle_momentum(300)", s.one_cycle_momentum(300))],
        ),
        "cyclic": (
            400,
            [
                ("triangular", s.cyclic(0.001, 0.01, 50)),
                ("triangular2", s.cyclic(0.001, 0.01, 50, mode="triangular2")),
                (
                    "exp_range, gamma=0.995",
                    s.cyclic(0.001, 0.01, 50, mode="exp_range", gamma=0.995),
                ),
            ],
            [],
        ),
        "lambda_schedule": (
            100,
            [
                (
                    "lambda_schedule(0.1, lambda t: 0.95 ** t)",
                    s.lambda_schedule(0.1, lambda t: 0.95**t),
                )
            ],
            [],
        ),
        "multiplicative": (
            100,
            [("multiplicative(0.1, lambda k: 0.95)", s.multiplicative(0.1, lambda k: 0.95))],
            [],
        ),
        "join": (
            1000,
            [
                (
                    "join([linear(0.1, 0.01, 1.0, 100), cosine_decay(0.1, 900)], [100])",
                    s.join([s.linear(0.1, 0.01, 1.0, 100), s.cosine_decay(0.1, 900)], [100]),
                )
            ],
            [],
        ),
        "chain": (
            100,
            [
                (
                    "chain([exponential_decay(0.1, 0.99), constant(1.0, 0.1, 20)])",
                    s.chain([s.exponential_decay(0.1, 0.99), s.constant(1.0, 0.1, 20)]),
                )
            ],
            [],
        ),
        "linear_warmup": (
            1100,
            [
                (
                    "linear_warmup(cosine_decay(0.1, 1000), warmup_steps=100)",
                    s.linear_warmup(s.cosine_decay(0.1, 1000), warmup_steps=100),
                )
            ],
            [],
        ),
    }


def plotted_schedules() -> list[str]:
    _uniopt()
    return list(_plot_specs())


def schedule_plot(name: str) -> bytes:
    """The PNG plot of schedule ``name`` (matplotlib, Agg)."""
    _uniopt()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, curves, second = _plot_specs()[name]
    fig, ax = plt.subplots(figsize=(7, 3.4), dpi=100)
    for label, schedule in curves:
        ax.plot(range(steps), [schedule(t) for t in range(steps)], label=label, linewidth=1.6)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if second:
        ax2 = ax.twinx()
        for label, schedule in second:
            ax2.plot(
                range(steps),
                [schedule(t) for t in range(steps)],
                label=label,
                linestyle="--",
                color="grey",
            )
        ax2.set_ylabel("momentum")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="best")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def schedule_page(name: str, section: str, has_plot: bool) -> str:
    """The page of one schedule: its section of schedules.md, the plot, the API entry."""
    lines = [f"# {name}", ""]
    if has_plot:
        lines += [f"![{name}]({name}.png)", ""]
    lines += [
        _demote(section),
        "",
        "The [overview](../schedules.md) has the conventions shared by all schedules (the "
        "step counts completed steps, from 0; int steps give floats, array steps arrays) "
        "and the table of the stateful schedulers built on them.",
        "",
        "## API",
        "",
        f"::: uniopt.schedules.{name}",
        "    options:",
        "      show_root_heading: false",
        "      show_root_toc_entry: false",
        "",
    ]
    return "\n".join(lines)


def _demote(markdown: str) -> str:
    """Headings of a section one level down, so the page title stays the only ``#``."""
    return re.sub(r"^(#{2,5}) ", r"#\1 ", markdown, flags=re.M)


# ---- parity -------------------------------------------------------------------------

_PARITY_ROW = re.compile(
    r"^(?P<case>\S+)\s+(?P<backend>\S+)\s+(?P<face>stateful|functional|flat)\s+(?P<abs>\S+)\s+"
    r"(?P<rel>\S+)\s+(?P<peer>\S+)\s+(?P<peer_rel>\S+)\s+(?P<ok>yes|NO)\s*$"
)


def parse_parity(text: str) -> list[dict[str, str]]:
    """The rows of ``python -m uniopt parity`` output (the main table)."""
    return [m.groupdict() for line in text.splitlines() if (m := _PARITY_ROW.match(line))]


def parity_markdown(text: str) -> str:
    """The parity output as Markdown: its header, then one table per algorithm with a
    row per case: the largest relative deviation from the oracle on each backend (over
    every face), and from each framework's own optimizer."""
    uniopt_algorithms = {}
    try:
        _uniopt()
        from uniopt.parity.cases import CASES

        uniopt_algorithms = {c.id: c.algorithm for c in CASES}
    except Exception:  # noqa: BLE001 - grouping by prefix is good enough
        pass
    rows = parse_parity(text)
    lines = text.splitlines()
    head = [line for line in lines if line.startswith("uniopt parity:")]
    summary = [line for line in lines if re.match(r"^\d+ passed, \d+ failed$", line)]
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    peers = list(dict.fromkeys(r["peer"] for r in rows if r["peer"] != "-"))
    out = []
    if head:
        out += [f"`{head[0]}`", ""]
    if summary:
        out += [f"**{summary[0]}** ({len(rows)} rows: case x backend x face).", ""]
    out += [
        "Each cell is the largest relative deviation of the two faces (stateful, functional) "
        "on that backend from the float64 oracle; the peer columns compare with the "
        "framework's own optimizer. Empty: no such twin.",
        "",
    ]
    cases: dict[str, dict[str, list[dict[str, str]]]] = {}
    for row in rows:
        algorithm = uniopt_algorithms.get(row["case"], row["case"].split("-")[0])
        cases.setdefault(algorithm, {}).setdefault(row["case"], []).append(row)

    def worst(values: list[str]) -> str:
        numbers = [float(v) for v in values if v != "-"]
        return f"{max(numbers):.1e}" if numbers else ""

    header = ["case", *backends, *(f"vs `{p}`" for p in peers), "ok"]
    for algorithm, by_case in cases.items():
        out += [
            f"### {algorithm}",
            "",
            "| " + " | ".join(header) + " |",
            "|---" + "|--:" * (len(header) - 2) + "|---|",
        ]
        for case, group in by_case.items():
            cells = [f"`{case}`"]
            cells += [worst([r["rel"] for r in group if r["backend"] == b]) for b in backends]
            cells += [worst([r["peer_rel"] for r in group if r["peer"] == p]) for p in peers]
            cells.append("yes" if all(r["ok"] == "yes" for r in group) else "**NO**")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def run_command(argv: list[str], timeout: float = 900) -> str:
    """Run a command in the repository root; its stdout (raises on failure to start)."""
    import subprocess

    done = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    return done.stdout + (done.stderr if done.returncode not in (0, 1) else "")


Generator = Callable[[], str]
