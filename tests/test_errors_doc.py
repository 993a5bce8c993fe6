"""docs/errors.md stays true: every entry of its tables parses, and for a sample of
entries, triggering the condition raises the documented exception with a message that
matches the documented pattern (``<...>``: any text, ``…``: the rest of the message)."""

from __future__ import annotations

import builtins
import re
from pathlib import Path

import numpy as np
import pytest

import uniopt
import uniopt.io
from uniopt import lr_scheduler, port, schedules

PAGE = Path(__file__).resolve().parent.parent / "docs" / "errors.md"


def documented() -> dict[str, tuple[list[str], str]]:
    """``name -> (exception names, message pattern)`` of every table row."""
    out = {}
    for line in PAGE.read_text().splitlines():
        if not re.match(r"^\| `[a-z0-9-]+` \|", line):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        assert len(cells) == 4, f"a row of errors.md needs 4 cells: {line}"
        name, exceptions, message = cells[0].strip("`"), cells[1], cells[2]
        assert name not in out, f"{name} is documented twice"
        fence = re.fullmatch(r"(`+) ?(.*?) ?\1", message)
        assert fence is not None, f"{name}: the message is not one code span: {message}"
        out[name] = (re.findall(r"`([A-Za-z]+)", exceptions), fence.group(2).replace("\\|", "|"))
    return out


def pattern(message: str) -> re.Pattern:
    parts = re.split(r"(<[^<>]*>|…)", message)
    regex = "".join(
        ".*" if p == "…" else ".*?" if p.startswith("<") and p.endswith(">") else re.escape(p)
        for p in parts
    )
    return re.compile(regex, re.S)


def exception_class(name: str) -> type:
    return getattr(builtins, name, None) or getattr(uniopt.io, name)


DOCUMENTED = documented()


def test_every_entry_parses():
    assert len(DOCUMENTED) >= 100
    for name, (exceptions, message) in DOCUMENTED.items():
        assert exceptions, f"{name}: no exception type"
        for exc in exceptions:
            assert issubclass(exception_class(exc), BaseException), name
        pattern(message)


def _p(n: int = 3):
    return [np.zeros(n)]


def _stepped():
    opt = uniopt.AdamW({"w": np.ones((2, 3)), "b": np.ones(3)}, lr=0.1, amsgrad=True)
    opt.step({"w": np.ones((2, 3)), "b": np.ones(3)})
    return opt


def _file(tmp_path, name, obj=None):
    path = tmp_path / name
    uniopt.save(_stepped() if obj is None else obj, path)
    return path


def _flip_last_byte(tmp_path):
    path = _file(tmp_path, "flipped.safetensors")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _junk(tmp_path):
    path = tmp_path / "junk.bin"
    path.write_bytes(b"not a state file")
    return path


def _plain_safetensors(tmp_path):
    path = tmp_path / "plain.safetensors"
    uniopt.io.write_safetensors(path, {"x": np.ones(2)}, {})
    return path


def _checkpoint(tmp_path):
    opt = _stepped()
    return _file(tmp_path, "ckpt.safetensors", {"optimizer": opt, "epoch": 3}), opt


def _sd_edit(edit):
    opt = _stepped()
    sd = opt.state_dict()
    edit(sd)
    opt.load_state_dict(sd)


def _step_lr(lr):
    opt = uniopt.SGD([{"params": _p()}, {"params": _p(), "lr": lr}], lr=0.1)
    opt.step([np.ones(3), np.ones(3)])


def _raising_schedule(step):
    raise ValueError("no rate here")


def _grads_on_numpy():
    import array_api_strict as xs

    uniopt.SGD({"w": np.ones(3)}).step({"w": xs.ones(3, dtype=xs.float64)})


#: a torch.optim.SGD state_dict of one parameter, as torch writes it (no torch needed)
_TORCH_SD = {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0, "params": [0]}]}
TRIGGERS = {
    "hp-range": lambda: uniopt.AdamW(_p(), weight_decay=-1),
    "hp-positive": lambda: uniopt.SGD(_p(), loss_scale=0),
    "hp-unit": lambda: uniopt.RMSprop(_p(), alpha=1.0),
    "hp-finite": lambda: uniopt.adam(eps=float("nan")),
    "hp-type": lambda: uniopt.Adagrad(_p(), lr_decay="fast"),
    "betas-pair": lambda: uniopt.LAMB(_p(), betas=(0.9,)),
    "betas-range": lambda: uniopt.AdamW(_p(), betas=(0.9, 1.0)),
    "flag": lambda: uniopt.Adam(_p(), amsgrad="yes"),
    "choice": lambda: uniopt.LAMB(_p(), beta_powers="runing"),
    "cross-check": lambda: uniopt.SGD(_p(), nesterov=True),
    "lr-type": lambda: uniopt.SGD(_p(), lr=None),
    "lr-shape": lambda: uniopt.SGD(_p(), lr=np.ones((2, 2))),
    "lr-empty": lambda: uniopt.SGD(_p(), lr=[]),
    "kw-unknown": lambda: uniopt.AdamW(_p(), weight_decy=0.1),
    "torch-switch": lambda: uniopt.AdamW(_p(), foreach="yes"),
    "flavor-unknown": lambda: uniopt.adamw(flavor="caffe"),
    "flavor-algorithm": lambda: uniopt.LarsMomentum(_p(), flavor="torch"),
    "grad-clip-type": lambda: uniopt.SGD(_p(), grad_clip=1.0),
    "callable": lambda: uniopt.SGD(_p(), apply_decay_param_fun=True),
    "lr-ratio": lambda: uniopt.SGD(_p(), lr_ratio=lambda p: -1.0),
    "loss-scale-type": lambda: uniopt.SGD(_p(), loss_scale="8"),
    "clip-value": lambda: uniopt.ClipGradByValue(1.0, 2.0),
    "dynamic-loss-scale": lambda: uniopt.DynamicLossScale(backoff_factor=2.0),
    "complex-refused": lambda: uniopt.Adam([np.ones(2, np.complex64)], flavor="keras"),
    "lookahead-inner": lambda: uniopt.LookAhead(uniopt.sgd(0.1)),
    "lookahead-option": lambda: uniopt.lookahead(uniopt.sgd(0.1), k=0),
    "params-empty": lambda: uniopt.SGD(iter([])),
    "not-array": lambda: uniopt.SGD([[1.0, 2.0]]),
    "param-dtype": lambda: uniopt.SGD([np.ones(2, np.int32)]),
    "param-contiguous": lambda: uniopt.SGD([np.ones((3, 4))[::2]]),
    "param-twice": lambda: (lambda x: uniopt.SGD([x, x]))(np.ones(2)),
    "param-name-twice": lambda: uniopt.SGD([("w", np.ones(1)), ("w", np.ones(2))]),
    "group-params": lambda: uniopt.SGD([{"params": _p()}, {"lr": 0.1}]),
    "add-group": lambda: uniopt.SGD(_p()).add_param_group({"lr": 0.1}),
    "param-names": lambda: uniopt.SGD([{"params": _p(), "param_names": ["a", "b"]}]),
    "order-params": lambda: uniopt.SGD([{"params": _p()}, {"order_params": ["x"]}]),
    "grad-mismatch": lambda: _stepped().step({"w": np.ones((3, 2)), "b": np.ones(3)}),
    "grad-backend": _grads_on_numpy,
    "grads-mirror": lambda: _stepped().step({"w": np.ones((2, 3))}),
    "step-needs-grads": lambda: _stepped().step(),
    "minimize": lambda: uniopt.SGD(_p()).minimize(np.ones(())),
    "lr-at-step": lambda: _step_lr(lambda t: -0.5),
    "lr-at-step-error": lambda: _step_lr(_raising_schedule),
    "set-lr-schedule": lambda: uniopt.SGD(_p(), lr=lambda t: 0.1).set_lr(0.2),
    "set-lr-type": lambda: uniopt.SGD(_p()).set_lr(lambda t: 0.1),
    "schedule-invalid": lambda: schedules.cosine_annealing(0.1, T_max=0),
    "schedule-type": lambda: schedules.step_decay(0.1, step_size="10"),
    "schedule-step": lambda: schedules.cosine_annealing(0.1, T_max=10)(-1),
    "schedule-step-type": lambda: schedules.cosine_annealing(0.1, T_max=10)(True),
    "schedule-rate": lambda: schedules.lambda_schedule(0.1, lambda t: -1.0)(2),
    "scheduler-optimizer": lambda: lr_scheduler.StepLR(object(), step_size=2),
    "scheduler-invalid": lambda: lr_scheduler.CosineAnnealingLR(_stepped(), T_max=0),
    "scheduler-resume": lambda: lr_scheduler.StepLR(_stepped(), step_size=2, last_step=3),
    "onecycle-total": lambda: lr_scheduler.OneCycleLR(_stepped(), max_lr=0.1),
    "cycle-momentum": lambda: lr_scheduler.OneCycleLR(
        uniopt.Adagrad(_p()), max_lr=0.1, total_steps=5
    ),
    "warmup-plateau": lambda: lr_scheduler.WarmupLR(lr_scheduler.ReduceLROnPlateau(_stepped())),
    "scheduler-state": lambda: lr_scheduler.StepLR(_stepped(), 2).load_state_dict({"x": 1}),
    "scheduler-state-type": lambda: lr_scheduler.StepLR(_stepped(), 2).load_state_dict([]),
    "lsd-type": lambda: _stepped().load_state_dict([1, 2]),
    "lsd-format": lambda: _sd_edit(lambda sd: sd.update(format="torch")),
    "lsd-version": lambda: _sd_edit(lambda sd: sd.update(version=99)),
    "lsd-algorithm": lambda: _sd_edit(lambda sd: sd.update(algorithm="sgd")),
    "lsd-malformed": lambda: _sd_edit(lambda sd: sd.update(step_count=-1)),
    "lsd-groups": lambda: _sd_edit(lambda sd: sd["param_groups"].append(sd["param_groups"][0])),
    "lsd-mismatch": lambda: _sd_edit(lambda sd: sd["state"]["b"].pop("exp_avg")),
    "lookahead-state": lambda: uniopt.LookAhead(uniopt.SGD(_p())).load_state_dict({}),
    "save-type": lambda: uniopt.save({"f": print}, "unused.safetensors"),
    "functional-stateful-option": lambda: uniopt.sgd(0.1, grad_clip=uniopt.ClipGradByValue(1)),
    "update-needs-params": lambda: (lambda tx: tx.update(_p(), tx.init(_p())))(uniopt.adamw()),
    "update-count": lambda: (lambda tx: tx.update(_p() * 2, tx.init(_p()), _p()))(uniopt.sgd()),
    "apply-updates": lambda: uniopt.apply_updates(_p(), _p() * 2),
    "flatten": lambda: uniopt.flatten([np.ones(2), None]),
    "load-transform-state": lambda: uniopt.load_transform_state({}, uniopt.sgd(), _p()),
    "port-unknown": lambda: port.from_paddle({}, {"w": np.ones(2)}, "Nadam"),
    "port-arguments": lambda: port.from_paddle({}, {"w": np.ones(2)}, "Adam", amsgrad2=1),
    "port-torch-state": lambda: port.from_torch_state_dict({"state": {}}),
    "port-names": lambda: port.from_torch_state_dict(_TORCH_SD, "sgd", names=["a", "b"]),
    "port-options": lambda: port.to_optax(uniopt.Adam(_p(), lazy_mode=True)),
    "clone-state": lambda: uniopt.SGD(_p()).clone_state("x", init="twos"),
    "get-lr-parameter": lambda: uniopt.SGD(_p()).get_lr_parameter(np.ones(3)),
}
FILE_TRIGGERS = {
    "load-unreadable": lambda tmp: uniopt.load(tmp / "missing.safetensors"),
    "load-not-safetensors": lambda tmp: uniopt.load(_junk(tmp)),
    "load-not-uniopt": lambda tmp: uniopt.load(_plain_safetensors(tmp)),
    "load-corrupted": lambda tmp: uniopt.load(_flip_last_byte(tmp)),
    "load-checkpoint": lambda tmp: uniopt.load(_checkpoint(tmp)[0], into={"scheduler": None}),
    "load-one-object": lambda tmp: uniopt.load(*_checkpoint(tmp)),
    "load-mismatch": lambda tmp: uniopt.load(_file(tmp, "o.st"), into=uniopt.AdamW(_p())),
}


def test_the_sample_covers_every_section():
    assert len(TRIGGERS) + len(FILE_TRIGGERS) >= 30
    assert set(TRIGGERS) | set(FILE_TRIGGERS) <= set(DOCUMENTED)


def check(name: str, error: pytest.ExceptionInfo) -> None:
    exceptions, message = DOCUMENTED[name]
    classes = tuple(exception_class(e) for e in exceptions)
    assert isinstance(error.value, classes), f"{name}: {error.type.__name__}, not {exceptions}"
    assert pattern(message).fullmatch(str(error.value)), (
        f"{name}: the message {str(error.value)!r} does not match the documented {message!r}"
    )


@pytest.mark.parametrize("name", sorted(TRIGGERS))
def test_documented_errors_match_the_library(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BaseException) as error:
        TRIGGERS[name]()
    check(name, error)


@pytest.mark.parametrize("name", sorted(FILE_TRIGGERS))
def test_documented_file_errors_match_the_library(name, tmp_path):
    with pytest.raises(BaseException) as error:
        FILE_TRIGGERS[name](tmp_path)
    check(name, error)


def test_documented_command_line_errors(tmp_path, capsys):
    from uniopt.__main__ import main

    with pytest.raises(SystemExit) as error:
        main(["inspect", str(tmp_path / "missing.safetensors")])
    assert error.value.code == 2
    line = capsys.readouterr().err.strip()
    assert pattern(DOCUMENTED["cli"][1]).fullmatch(line), line
    assert pattern(DOCUMENTED["load-unreadable"][1]).fullmatch(line.split("error: ", 1)[1])
