"""State files: format, safety, atomic writes, bad files, strict matching, and resuming
across backends (the oracle: the same optimizer run without interruption)."""

from __future__ import annotations

import base64
import json
import math
import os
import pickle
import signal
import stat
import subprocess
import sys
import textwrap
import time

import ml_dtypes
import numpy as np
import pytest
from conftest import require, to_backend, to_numpy

import uniopt
from uniopt import io, io_atomic, io_safetensors
from uniopt.parity.cases import CASES
from uniopt.parity.problem import NAMES, make_problem

STEPS = 8
PROBLEM = make_problem(STEPS, seed=2)
FIRST_OF_EACH = {c.algorithm: c for c in reversed(CASES)}.values()


# ---- a run on any backend, gradients from NumPy (so every backend sees the same ones) ----


def build(case, backend, values, dtype="float64"):
    params = {n: to_backend(backend, v, dtype) for n, v in zip(NAMES, values)}
    if backend == "torch":
        import torch

        params = {n: torch.nn.Parameter(p) for n, p in params.items()}
    return case.build(params)


def current(opt):
    return {n: to_numpy(p) for g in opt.param_groups for n, p in zip(g["param_names"], g["params"])}


def run(opt, backend, steps, dtype="float64"):
    for t in steps:
        now = current(opt)
        grads = {}
        for i, n in enumerate(NAMES):
            g = PROBLEM.curvature[i] * (now[n] - PROBLEM.center[i]) + PROBLEM.noise[t][i]
            grads[n] = to_backend(backend, g.astype(dtype), dtype)
        opt.step(grads)
    return current(opt)


def assert_close(got, want, rtol, scaled=False):
    """Equal (``rtol=0``), or within ``rtol`` element-wise; ``scaled``: relative to the
    tensor's largest magnitude (float32, where near-zero elements carry no precision)."""
    for n in NAMES:
        if rtol == 0:
            np.testing.assert_array_equal(got[n], want[n], err_msg=n)
        else:
            atol = rtol * np.max(np.abs(want[n])) if scaled else 0
            np.testing.assert_allclose(got[n], want[n], rtol=rtol, atol=atol, err_msg=n)


def hop(case, opt, backend, path, dtype="float64"):
    """Save ``opt``, build the optimizer on ``backend`` from its values, load the file."""
    uniopt.save(opt, path)
    new = build(case, backend, [current(opt)[n] for n in NAMES], dtype)
    uniopt.load(path, into=new)
    return new


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_state_file_resumes_across_backends_over_the_registry(case, tmp_path):
    """numpy -> array_api_strict -> torch -> numpy through files equals one numpy run:
    bit for bit through numpy/strict, to 1e-12 once torch has stepped."""
    for name in ("torch", "array_api_strict"):
        require(name)
    straight = build(case, "numpy", PROBLEM.init)
    at_four = run(straight, "numpy", range(4))
    final = run(straight, "numpy", range(4, STEPS))

    opt = build(case, "numpy", PROBLEM.init)
    run(opt, "numpy", range(2))
    opt = hop(case, opt, "array_api_strict", tmp_path / "a.safetensors")
    run(opt, "array_api_strict", range(2, 4))
    opt = hop(case, opt, "numpy", tmp_path / "b.safetensors")
    assert_close(current(opt), at_four, rtol=0)
    opt = hop(case, opt, "torch", tmp_path / "c.safetensors")
    run(opt, "torch", range(4, 6))
    opt = hop(case, opt, "numpy", tmp_path / "d.safetensors")
    assert_close(run(opt, "numpy", range(6, STEPS)), final, rtol=1e-12)


@pytest.mark.parametrize("case", FIRST_OF_EACH, ids=lambda c: c.id)
def test_state_file_resumes_into_and_out_of_jax(case, tmp_path):
    require("jax")
    require("torch")
    straight = build(case, "torch", PROBLEM.init)
    final = run(straight, "torch", range(STEPS))
    opt = build(case, "torch", PROBLEM.init)
    run(opt, "torch", range(3))
    opt = hop(case, opt, "jax", tmp_path / "a.safetensors")
    run(opt, "jax", range(3, 6))
    opt = hop(case, opt, "torch", tmp_path / "b.safetensors")
    assert_close(run(opt, "torch", range(6, STEPS)), final, rtol=1e-12)


PAIRS = [
    (a, b)
    for a in ("numpy", "torch", "jax", "array_api_strict")
    for b in ("numpy", "torch", "jax", "array_api_strict")
]


@pytest.mark.parametrize("source,target", PAIRS)
def test_every_backend_pair_resumes_adamw(source, target, tmp_path):
    require(source)
    require(target)
    case = next(c for c in CASES if c.id == "adamw-amsgrad")
    straight = build(case, target, PROBLEM.init)
    final = run(straight, target, range(STEPS))
    opt = build(case, source, PROBLEM.init)
    run(opt, source, range(4))
    opt = hop(case, opt, target, tmp_path / "s.safetensors")
    exact = source == target or {source, target} <= {"numpy", "array_api_strict"}
    assert_close(run(opt, target, range(4, STEPS)), final, rtol=0 if exact else 1e-12)


@pytest.mark.parametrize("case_id", ["adamw-default", "sgd-momentum", "rmsprop-centered-momentum"])
def test_float32_state_resumes_across_backends(case_id, tmp_path):
    for name in ("torch", "jax", "array_api_strict"):
        require(name)
    case = next(c for c in CASES if c.id == case_id)
    straight = build(case, "numpy", PROBLEM.init, "float32")
    final = run(straight, "numpy", range(STEPS), "float32")
    opt = build(case, "numpy", PROBLEM.init, "float32")
    run(opt, "numpy", range(2), "float32")
    for k, backend in enumerate(("torch", "jax", "array_api_strict")):
        opt = hop(case, opt, backend, tmp_path / f"{k}.safetensors", "float32")
        run(opt, backend, range(2 + 2 * k, 4 + 2 * k), "float32")
    sd = uniopt.load(_saved(opt, tmp_path / "last.safetensors"))
    inner = sd.get("inner", sd)
    assert all(
        v.dtype == np.float32 for e in inner["state"].values() for k, v in e.items() if k != "step"
    )
    assert_close(current(opt), final, rtol=1e-6, scaled=True)


def _saved(obj, path):
    uniopt.save(obj, path)
    return path


def test_scheduler_checkpoint_mid_schedule_resumes_on_another_backend(tmp_path):
    require("torch")
    case = next(c for c in CASES if c.id == "adamw-default")

    def make(backend, values):
        opt = build(case, backend, values)
        return opt, uniopt.lr_scheduler.CosineAnnealingLR(opt, T_max=5, eta_min=0.001)

    def go(opt, sched, backend, steps, lrs):
        for t in steps:
            run(opt, backend, [t])
            sched.step()
            lrs.append(sched.get_last_lr())

    opt, sched = make("numpy", PROBLEM.init)
    straight: list = []
    go(opt, sched, "numpy", range(STEPS), straight)

    first, first_sched = make("numpy", PROBLEM.init)
    resumed: list = []
    go(first, first_sched, "numpy", range(3), resumed)
    path = tmp_path / "ckpt.safetensors"
    uniopt.save({"optimizer": first, "scheduler": first_sched, "epoch": 3}, path)
    second, second_sched = make("torch", [current(first)[n] for n in NAMES])
    reports = uniopt.load(path, into={"optimizer": second, "scheduler": second_sched})
    assert reports["optimizer"].complete and reports["scheduler"] is None
    assert uniopt.load(path)["epoch"] == 3
    assert (
        second_sched.last_step == 3 and second.param_groups[0]["lr"] == first.param_groups[0]["lr"]
    )
    go(second, second_sched, "torch", range(3, STEPS), resumed)
    assert resumed == straight
    assert_close(current(second), current(opt), rtol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_multi_precision_state_resumes(backend, tmp_path):
    require(backend)
    values = {"w": np.linspace(-1, 1, 4), "v": np.ones(3)}

    def bf16(x):
        if backend == "numpy":
            return np.asarray(x, np.float64).astype(ml_dtypes.bfloat16)
        import torch

        return torch.tensor(np.asarray(x, np.float64)).to(torch.bfloat16)

    def host(x):
        return np.asarray(x.float() if hasattr(x, "float") else x, np.float64)

    def make(vals):
        return uniopt.AdamW({n: bf16(v) for n, v in vals.items()}, lr=0.01, multi_precision=True)

    grads = {n: bf16(np.ones_like(v)) for n, v in values.items()}
    straight, first = make(values), make(values)
    for opt in (straight, first):
        for _ in range(3):
            opt.step({"w": grads["w"], "v": None})
    path = _saved(first, tmp_path / "mp.safetensors")
    state = uniopt.load(path)["state"]["w"]
    assert {k: v.dtype.name for k, v in state.items() if k != "step"} == dict.fromkeys(
        ("exp_avg", "exp_avg_sq", "master"), "float32"
    )
    second = make({n: host(p) for n, p in first.params.items()})
    assert uniopt.load(path, into=second).loaded == ["w"]
    for opt in (straight, second):
        for _ in range(3):
            opt.step(grads)
    for n in values:
        np.testing.assert_array_equal(host(second.params[n]), host(straight.params[n]))


def test_functional_state_round_trips_as_plain_data(tmp_path):
    require("jax")
    import jax
    import jax.numpy as jnp

    tx = uniopt.adamw(lr=0.1)
    params = {"w": jnp.ones(3), "b": jnp.zeros(2)}
    grads = {"w": jnp.full(3, 0.5), "b": jnp.ones(2)}
    state = tx.init(params)
    _, state = tx.update(grads, state, params)
    uniopt.save({"tx_state": state, "step": 1}, tmp_path / "fx.safetensors")
    loaded = uniopt.load(tmp_path / "fx.safetensors")["tx_state"]
    restored = jax.tree_util.tree_map(jnp.asarray, uniopt.TransformState(*loaded))
    want, _ = tx.update(grads, state, params)
    got, _ = tx.update(grads, restored, params)
    for n in params:
        np.testing.assert_array_equal(np.asarray(got[n]), np.asarray(want[n]))


# ---- the format ---------------------------------------------------------------------------


def nested_sample():
    big_endian = np.arange(6, dtype=">f8").reshape(2, 3)
    return {
        "f64": np.linspace(-1, 1, 7),
        "f32": np.float32([1.5, -0.0, np.inf, np.nan]),
        "f16": np.float16([1, 2, 65504]),
        "bf16": np.array([1.0, -2.5, 3e38, np.nan], dtype=ml_dtypes.bfloat16),
        "ints": [
            np.arange(4, dtype=d)
            for d in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
        ],
        "bool": np.array([True, False]),
        "scalar0d": np.array(3.25),
        "empty": np.zeros((0, 3), np.float32),
        "transposed": np.arange(6.0).reshape(2, 3).T,
        "big_endian": big_endian,
        "npscalar": np.float32(2.5),
        "numbers": (1, -(2**70), 0.1, -0.0, math.inf, -math.inf, math.nan, True, None),
        "text": "héllo ✓",
        "int_keys": {0: "a", 1: {"x": [1, 2]}, (2, "b"): None},
        "dollar": {"$array": "not a reference", "$float": 1},
        "list_of_tuples": [(0.9, 0.999), ()],
    }


def assert_same(a, b):
    """Equal types, structure and values; arrays equal bit for bit (NaNs, -0.0)."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, (a, b)
        assert a.tobytes() == np.ascontiguousarray(b).tobytes()
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    elif isinstance(a, float):
        assert a == b and math.copysign(1, a) == math.copysign(1, b)
    else:
        assert a == b


def test_generic_nested_state_round_trips_exactly(tmp_path):
    sample = nested_sample()
    uniopt.save(sample, tmp_path / "x.safetensors")
    back = uniopt.load(tmp_path / "x.safetensors")
    assert back["npscalar"].dtype == np.float32 and back["npscalar"] == 2.5
    assert back["bf16"].dtype == ml_dtypes.bfloat16
    assert back["big_endian"].dtype == np.float64 and back["big_endian"].dtype.isnative
    assert back["transposed"].flags.c_contiguous and back["f64"].flags.writeable
    np.testing.assert_array_equal(back["transposed"], sample["transposed"])
    sample["big_endian"] = sample["big_endian"].astype("<f8")
    assert_same(back, sample)


def test_files_open_with_the_safetensors_library_and_back(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    opt = uniopt.AdamW({"w": np.ones((2, 3)), "b": np.zeros(3, ml_dtypes.bfloat16)}, lr=0.1)
    opt.step({"w": np.ones((2, 3)), "b": np.ones(3, ml_dtypes.bfloat16)})
    path = tmp_path / "opt.safetensors"
    uniopt.save(opt, path)
    arrays = st.load_file(str(path))
    np.testing.assert_array_equal(
        arrays["state/w/exp_avg"], opt.state_dict()["state"]["w"]["exp_avg"]
    )
    # bfloat16 is stored as its raw bits (U16), tagged in the metadata
    assert arrays["state/b/exp_avg"].dtype == np.uint16
    metadata = io.read_header(path).metadata
    assert json.loads(metadata["uniopt.dtypes"]) == {
        "state/b/exp_avg": "bfloat16",
        "state/b/exp_avg_sq": "bfloat16",
    }
    # a file written by the reference writer (its own layout) loads the same
    again = tmp_path / "again.safetensors"
    st.save_file(arrays, str(again), metadata=metadata)
    loaded = uniopt.load(again)
    fresh = uniopt.AdamW({"w": np.ones((2, 3)), "b": np.zeros(3, ml_dtypes.bfloat16)}, lr=0.1)
    fresh.load_state_dict(loaded)
    assert_same(fresh.state_dict()["state"], opt.state_dict()["state"])


def test_native_bfloat16_tensors_of_other_writers_are_read(tmp_path):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    x = torch.tensor([1.0, -2.5, 3e38, float("nan")], dtype=torch.bfloat16)
    st.save_file({"x": x}, str(tmp_path / "t.safetensors"))
    _, arrays = io.read_safetensors(tmp_path / "t.safetensors")
    assert arrays["x"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(arrays["x"].view(np.int16), x.view(torch.int16).numpy())


def test_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "opt.safetensors"
    opt = uniopt.SGD({"w": np.ones(1000)}, lr=0.1, momentum=0.9)
    opt.step({"w": np.ones(1000)})
    uniopt.save(opt, path)
    before = path.read_bytes()
    opt.step({"w": np.ones(1000)})

    def crash(f, arrays):
        f.write(b"\0" * 100)  # part of the data, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(io_safetensors, "_write_data", crash)
    with pytest.raises(KeyboardInterrupt):
        uniopt.save(opt, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["opt.safetensors"]
    monkeypatch.undo()
    with pytest.raises(TypeError, match=r"\['f'\]\[0\]: it is a function"):
        uniopt.save({"ok": 1, "f": [lambda: 0]}, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["opt.safetensors"]
    uniopt.save(opt, path)
    assert uniopt.load(path)["state"]["w"]["step"] == 2


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_payloads_and_crafted_content_are_rejected_never_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"state": _Payload(marker)}))
    with pytest.raises(io.StateFileError, match="not a safetensors file"):
        uniopt.load(evil)
    assert not marker.exists()
    pickle.loads(pickle.dumps(_Payload(tmp_path / "live")))  # the payload does run when unpickled
    assert (tmp_path / "live").exists()
    # valid safetensors, hostile JSON: unknown tags, pickled bytes as a string
    for content in (
        {"$class": "os.system", "args": ["touch pwned"]},
        {"x": {"$reduce": ["builtins.eval", "1"]}},
        {"$pickle": pickle.dumps(_Payload(marker)).hex()},
        {"$array": "missing"},
    ):
        path = tmp_path / "crafted.safetensors"
        meta = {
            "uniopt.format": io.FILE_FORMAT,
            "uniopt.version": "1",
            "uniopt.content": json.dumps(content),
        }
        io.write_safetensors(path, {}, meta)
        with pytest.raises(io.StateFileError, match="malformed content"):
            uniopt.load(path)
    assert not marker.exists()


def _valid_file(tmp_path):
    opt = uniopt.Adam({"w": np.ones((4, 4)), "b": np.ones(4)}, lr=0.1)
    opt.step({"w": np.ones((4, 4)), "b": np.ones(4)})
    path = tmp_path / "good.safetensors"
    uniopt.save(opt, path)
    return path


def _header_edit(path, edit, sign=True):
    """The bytes of ``path`` with its header changed by ``edit``; ``sign``: with the header
    checksum recomputed (a crafted file, to reach the checks behind the checksum)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    meta = header.get("__metadata__")
    if sign and isinstance(meta, dict) and io_safetensors.DIGEST_KEY in meta:
        meta[io_safetensors.DIGEST_KEY] = io_safetensors.header_digest(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + n :]


def _meta(key, value):
    def edit(header):
        header["__metadata__"][key] = value

    return edit


BAD_FILES = {
    "empty": lambda raw, p: b"",
    "tiny": lambda raw, p: b"\x01\x02\x03",
    "truncated data": lambda raw, p: raw[:-5],
    "truncated header": lambda raw, p: raw[:40],
    "trailing garbage": lambda raw, p: raw + b"junk",
    "flipped data byte": lambda raw, p: raw[:-3] + bytes([raw[-3] ^ 0x10]) + raw[-2:],
    "header not json": lambda raw, p: raw[:8] + b"x" + raw[9:],
    "huge header length": lambda raw, p: (2**40).to_bytes(8, "little") + raw[8:],
    "future version": lambda raw, p: _header_edit(p, _meta("uniopt.version", "3")),
    "edited, not re-signed": lambda raw, p: _header_edit(p, _meta("uniopt.version", "1"), False),
    "checksum removed": lambda raw, p: _header_edit(
        p, lambda h: h["__metadata__"].pop(io_safetensors.DIGEST_KEY)
    ),
    "crc32 removed": lambda raw, p: _header_edit(
        p, lambda h: h["__metadata__"].pop("uniopt.crc32")
    ),
    "one crc32 removed": lambda raw, p: _header_edit(
        p,
        _meta("uniopt.crc32", json.dumps({"state/w/exp_avg": 0})),
    ),
    "not uniopt": lambda raw, p: _header_edit(p, lambda h: h.pop("__metadata__")),
    "bad tree": lambda raw, p: _header_edit(p, _meta("uniopt.content", '{"a": {"$tuple": 3}}')),
    "json constant": lambda raw, p: _header_edit(p, _meta("uniopt.content", '{"a": NaN}')),
    "bad dtype": lambda raw, p: _header_edit(p, lambda h: h["state/b/exp_avg"].update(dtype="O")),
    "bad shape": lambda raw, p: _header_edit(p, lambda h: h["state/b/exp_avg"].update(shape=[5])),
    "overlap": lambda raw, p: _header_edit(
        p, lambda h: h["state/w/exp_avg"].update(data_offsets=[0, 128])
    ),
    "zip (torch.save)": lambda raw, p: b"PK\x03\x04" + raw,
}


@pytest.mark.parametrize("kind", BAD_FILES)
def test_bad_files_raise_a_clear_error_and_change_nothing(kind, tmp_path):
    good = _valid_file(tmp_path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(BAD_FILES[kind](good.read_bytes(), good))
    opt = uniopt.Adam({"w": np.zeros((4, 4)), "b": np.zeros(4)}, lr=0.5)
    opt.step({"w": np.ones((4, 4)), "b": np.ones(4)})
    before = opt.state_dict()
    with pytest.raises(io.StateFileError) as error:
        uniopt.load(bad, into=opt)
    assert str(bad) in str(error.value)
    assert isinstance(error.value, ValueError)
    assert_same(opt.state_dict(), before)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(io.StateFileError, match="cannot read"):
        uniopt.load(tmp_path / "nope.safetensors")
    with pytest.raises(IsADirectoryError):
        uniopt.save({"a": 1}, tmp_path)


# ---- learning-rate schedules are not data ------------------------------------------------


def test_schedule_lr_is_saved_as_its_value_and_the_target_keeps_its_own(tmp_path):
    schedule = uniopt.schedules.cosine_annealing(0.1, 10)
    straight = uniopt.SGD({"w": np.ones(3)}, lr=schedule, momentum=0.9)
    grads = [{"w": np.full(3, 0.1 * t)} for t in range(6)]
    for g in grads:
        straight.step(g)
    first = uniopt.SGD({"w": np.ones(3)}, lr=schedule, momentum=0.9)
    for g in grads[:3]:
        first.step(g)
    uniopt.save(first, tmp_path / "s.safetensors")
    saved = uniopt.load(tmp_path / "s.safetensors")
    group = saved["param_groups"][0]
    assert "lr" not in group and group["lr_at_save"] == pytest.approx(schedule(3))
    assert "lr" in group["unsaved"]
    info = io.read_info(tmp_path / "s.safetensors")[0]
    assert info["parts"][0]["unsaved"] == {"0": group["unsaved"]}
    second = uniopt.SGD({"w": first.params["w"].copy()}, lr=schedule, momentum=0.9)
    report = uniopt.load(tmp_path / "s.safetensors", into=second)
    assert second.param_groups[0]["lr"] is schedule
    assert any("saved without ['lr']" in note for note in report.notes)
    for g in grads[3:]:
        second.step(g)
    np.testing.assert_array_equal(second.params["w"], straight.params["w"])


# ---- strict matching ----------------------------------------------------------------------


def _stepped(params, **kw):
    opt = uniopt.Adam(params, lr=0.1, **kw)
    opt.step({n: np.ones_like(p) for n, p in params.items()})
    return opt


def test_strict_load_lists_every_mismatch_and_changes_nothing(tmp_path):
    saved = _stepped({"a": np.ones(3), "b": np.ones((2, 2)), "c": np.ones(2), "gone": np.ones(1)})
    path = _saved(saved, tmp_path / "s.safetensors")
    target = _stepped(
        {"a": np.ones(3), "b": np.ones((2, 3)), "c": np.ones(2, np.float32), "new": np.ones(1)}
    )
    before = target.state_dict()
    with pytest.raises(io.StateMismatchError) as error:
        uniopt.load(path, into=target)
    text = "\n".join(error.value.problems)
    for expected in (
        "the state has no parameters ['new']",
        "the optimizer has no parameters ['gone']",
        "the optimizer has no parameter 'gone'",
        "'b': state 'exp_avg' is float64[2, 2], expected float64[2, 3]",
        "'c': state 'exp_avg' is float64[2], expected float32[2]",
    ):
        assert expected in text
    assert len(error.value.problems) >= 5 and str(len(error.value.problems)) in str(error.value)
    assert_same(target.state_dict(), before)
    # another algorithm is refused in both modes, listed with the rest
    sgd = uniopt.SGD({"a": np.ones(3)}, lr=0.1, momentum=0.9)
    for strict in (True, False):
        with pytest.raises(
            io.StateMismatchError, match="the state is for 'adam', the optimizer is 'sgd'"
        ):
            uniopt.load(path, into=sgd, strict=strict)


def test_loading_matches_by_name_never_by_position(tmp_path):
    rng = np.random.default_rng(0)
    values = {n: rng.standard_normal(4) for n in "xyz"}
    grads = [{n: rng.standard_normal(4) for n in "xyz"} for _ in range(6)]
    straight = uniopt.Adam({n: v.copy() for n, v in values.items()}, lr=0.1)
    for g in grads:
        straight.step(g)
    first = uniopt.Adam({n: v.copy() for n, v in values.items()}, lr=0.1)
    for g in grads[:3]:
        first.step(g)
    path = _saved(first, tmp_path / "s.safetensors")
    # same names, same shapes, reversed order (and as pairs): state must follow names
    second = uniopt.Adam([(n, first.params[n].copy()) for n in "zyx"], lr=0.1)
    uniopt.load(path, into=second)
    for g in grads[3:]:
        second.step(g)
    got = dict(second.params)
    for n in "xyz":
        np.testing.assert_array_equal(got[n], straight.params[n])


def test_non_strict_loads_the_intersection_and_reports_the_rest(tmp_path):
    rng = np.random.default_rng(1)
    sizes = {"keep": 3, "reshaped": 3, "gone": 3}
    new_sizes = {"keep": 3, "reshaped": 2, "new": 3}
    grads = [
        {n: rng.standard_normal(3) for n in ("keep", "reshaped", "gone", "new")} for _ in range(6)
    ]

    def g(shapes, t):
        return {n: grads[t][n][:k] for n, k in shapes.items()}

    first = uniopt.Adam({n: np.ones(k) for n, k in sizes.items()}, lr=0.1)
    for t in range(3):
        first.step(g(sizes, t))
    path = _saved(first, tmp_path / "s.safetensors")
    second = uniopt.Adam(
        [
            {"params": {"keep": first.params["keep"].copy()}, "lr": 0.5},
            {"params": {"reshaped": np.ones(2), "new": np.ones(3)}},
        ],
        lr=0.1,
    )
    with pytest.raises(io.StateMismatchError):
        uniopt.load(path, into=second)
    report = uniopt.load(path, into=second, strict=False)
    assert report.loaded == ["keep"]
    assert set(report.skipped) == {"gone", "reshaped"}
    assert "expected float64[2]" in report.skipped["reshaped"]
    assert report.missing == ["new"] and not report.complete
    # group 0 took the lr of the saved group its parameter came from
    assert second.param_groups[0]["lr"] == 0.1
    # 'keep' continues the saved trajectory; 'new' and 'reshaped' start fresh
    reference = uniopt.Adam({"keep": np.ones(3)}, lr=0.1)
    fresh = uniopt.Adam({"reshaped": np.ones(2), "new": np.ones(3)}, lr=0.1)
    for t in range(6):
        reference.step(g({"keep": 3}, t))
    for t in range(3, 6):
        second.step(g(new_sizes, t))
        fresh.step(g({"reshaped": 2, "new": 3}, t))
    params = {**second.params[0]["params"], **second.params[1]["params"]}
    np.testing.assert_array_equal(params["keep"], reference.params["keep"])
    np.testing.assert_array_equal(params["new"], fresh.params["new"])
    np.testing.assert_array_equal(params["reshaped"], fresh.params["reshaped"])


def test_non_strict_takes_hyperparameters_by_name_across_regrouping(tmp_path):
    first = uniopt.SGD(
        [{"params": {"a": np.ones(2), "b": np.ones(2)}, "lr": 0.3}, {"params": {"c": np.ones(2)}}],
        lr=0.1,
        momentum=0.9,
    )
    first.step({"a": np.ones(2), "b": np.ones(2), "c": np.ones(2)})
    path = _saved(first, tmp_path / "s.safetensors")
    second = uniopt.SGD(
        [{"params": {"c": np.ones(2)}}, {"params": {"a": np.ones(2), "b": np.ones(2)}}],
        lr=0.7,
        momentum=0.5,
    )
    report = uniopt.load(path, into=second, strict=False)
    assert report.complete and sorted(report.loaded) == ["a", "b", "c"]
    assert [g["lr"] for g in second.param_groups] == [0.1, 0.3]
    assert [g["momentum"] for g in second.param_groups] == [0.9, 0.9]
    mixed = uniopt.SGD({"a": np.ones(2), "c": np.ones(2)}, lr=0.7, momentum=0.5)
    report = uniopt.load(path, into=mixed, strict=False)
    assert mixed.param_groups[0]["lr"] == 0.7
    assert report.missing == [] and set(report.skipped) == {"b"}
    assert any("saved groups [0, 1]" in note for note in report.notes)


def test_checkpoint_load_is_all_or_nothing(tmp_path, monkeypatch):
    opt = _stepped({"w": np.ones(3)})
    sched = uniopt.lr_scheduler.StepLR(opt, step_size=2)
    sched.step()
    path = _saved({"optimizer": opt, "scheduler": sched}, tmp_path / "c.safetensors")
    target = _stepped({"w": np.zeros(3)})
    target_sched = uniopt.lr_scheduler.CosineAnnealingLR(target, T_max=3)
    before = target.state_dict()
    with pytest.raises(
        io.StateMismatchError, match="holds a StepLR state, not a CosineAnnealingLR"
    ):
        uniopt.load(path, into={"optimizer": target, "scheduler": target_sched})
    assert_same(target.state_dict(), before)
    step_sched = uniopt.lr_scheduler.StepLR(target, step_size=5)
    sched_before = step_sched.state_dict()

    def broken(state):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(step_sched, "load_state_dict", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        uniopt.load(path, into={"optimizer": target, "scheduler": step_sched})
    assert_same(target.state_dict(), before)  # rolled back
    monkeypatch.undo()
    assert step_sched.state_dict() == sched_before
    with pytest.raises(io.StateFileError, match="has no entries"):
        uniopt.load(path, into={"optimiser": target})


def test_loading_an_optimizer_file_into_a_scheduler_is_refused(tmp_path):
    opt = _stepped({"w": np.ones(3)})
    path = _saved(opt, tmp_path / "o.safetensors")
    sched = uniopt.lr_scheduler.StepLR(opt, step_size=2)
    before = sched.state_dict()
    with pytest.raises(io.StateMismatchError, match="not a StepLR state"):
        uniopt.load(path, into=sched)
    assert sched.state_dict() == before


# ---- nothing silently wrong (issue 15) ----------------------------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _temporaries(directory):
    return sorted(n for n in os.listdir(directory) if n.endswith(".tmp"))


def test_save_removes_stale_temporaries_of_its_own_target_only(tmp_path):
    path = tmp_path / "opt.safetensors"
    stale = [tmp_path / f".opt.safetensors.{h}.tmp" for h in ("0123456789ab", "deadbeef0000")]
    for f in stale:
        f.write_bytes(b"\0" * 4096)
    keep = [
        tmp_path / ".other.safetensors.0123456789ab.tmp",  # another target's
        tmp_path / ".opt.safetensors.0123456789abc.tmp",  # not the pattern: 13 digits
        tmp_path / ".opt.safetensors.0123456789AB.tmp",  # upper case: not ours
        tmp_path / ".opt.0123456789ab.tmp",
        tmp_path / "opt.safetensors.tmp",
        tmp_path / ".opt.safetensors.0123456789ab.tmp.keep",
        tmp_path / "notes.txt",
    ]
    for f in keep:
        f.write_bytes(b"not uniopt's")
    pattern_dir = tmp_path / ".opt.safetensors.bbbbbbbbbbbb.tmp"  # matches, but a directory
    pattern_dir.mkdir()
    live = tmp_path / ".opt.safetensors.aaaaaaaaaaaa.tmp"  # held by a running save
    fd = os.open(live, os.O_RDWR | os.O_CREAT)
    try:
        locked = io_atomic.fcntl is not None
        if locked:
            io_atomic.fcntl.flock(fd, io_atomic.fcntl.LOCK_EX)
        uniopt.save({"a": np.ones(3)}, path)
        assert not any(f.exists() for f in stale)
        assert all(f.read_bytes() == b"not uniopt's" for f in keep)
        assert pattern_dir.is_dir() and live.exists() == locked
    finally:
        os.close(fd)
    np.testing.assert_array_equal(uniopt.load(path)["a"], np.ones(3))
    # once its writer is gone, the next save removes it
    uniopt.save({"a": np.zeros(3)}, path)
    assert not live.exists()
    assert io_atomic.temporary_pattern(path).match(stale[0].name)
    assert not io_atomic.temporary_pattern(path).match(keep[0].name)


KILLED_SAVE = textwrap.dedent(
    """
    import sys
    import numpy as np
    import uniopt

    path = sys.argv[1]
    arrays = {f"a{i}": np.full(2**19, float(i)) for i in range(8)}  # 32 MB
    print("ready", flush=True)
    while True:  # save again and again: a kill lands mid-save
        uniopt.save(arrays, path)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
def test_a_save_killed_by_sigkill_leaves_a_temporary_that_the_next_save_removes(tmp_path):
    path = tmp_path / "big.safetensors"
    pattern = io_atomic.temporary_pattern(path)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    left = []
    for _ in range(5):  # the kill may land between two saves: then try again
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED_SAVE, str(path)], stdout=subprocess.PIPE, env=env
        )
        try:
            assert child.stdout.readline().strip() == b"ready"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(
                pattern.match(n) for n in os.listdir(tmp_path)
            ):
                time.sleep(0.001)
        finally:
            child.kill()  # SIGKILL: no cleanup can run
            child.wait(30)
            child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        left = [n for n in os.listdir(tmp_path) if pattern.match(n)]
        if left:
            break
    assert left, "the child was never killed mid-save"
    if path.exists():  # the last complete save, never a partial one
        assert uniopt.load(path)["a7"][0] == 7.0
    uniopt.save({"small": np.ones(2)}, path)
    assert _temporaries(tmp_path) == []
    np.testing.assert_array_equal(uniopt.load(path)["small"], np.ones(2))


def _sgd_file(tmp_path, name="sgd.safetensors"):
    """An SGD state with lr 0.01 after 3 steps."""
    opt = uniopt.SGD({"w": np.array([1.0, -2.0, 0.5])}, lr=0.01, momentum=0.9)
    for _ in range(3):
        opt.step({"w": np.array([0.5, 0.25, -1.0])})
    path = tmp_path / name
    uniopt.save(opt, path)
    return path


def test_one_flipped_bit_in_lr_or_step_fails_the_header_checksum(tmp_path):
    path = _sgd_file(tmp_path)
    raw = path.read_bytes()
    bad = tmp_path / "bad.safetensors"
    for old, new in ((rb"lr\":0.01", rb"lr\":0.05"), (rb"step_count\":3", rb"step_count\":7")):
        assert raw.index(old) < raw.index(b"uniopt.info")  # the first is in the content
        edited = raw.replace(old, new, 1)
        assert sum(bin(a ^ b).count("1") for a, b in zip(raw, edited)) == 1  # one bit
        bad.write_bytes(edited)
        for read in (uniopt.load, io.read_info, io.read_header):
            with pytest.raises(io.StateFileError, match="fails its checksum"):
                read(bad)
    opt = uniopt.SGD({"w": np.zeros(3)}, lr=0.5, momentum=0.9)
    with pytest.raises(io.StateFileError):
        uniopt.load(bad, into=opt)
    assert opt.param_groups[0]["lr"] == 0.5 and opt.state_dict()["step_count"] == 0


def test_no_single_bit_flip_in_the_header_loads_silently(tmp_path):
    """Every bit of the length prefix and of the JSON header, flipped one at a time: each
    file is refused with a StateFileError (never another exception, never a load)."""
    path = _sgd_file(tmp_path)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    bad = tmp_path / "flipped.safetensors"
    silent = []
    for i in range(8 + n):
        for bit in range(8):
            flipped = bytearray(raw)
            flipped[i] ^= 1 << bit
            bad.write_bytes(flipped)
            try:
                uniopt.load(bad)
            except io.StateFileError:
                continue
            silent.append((i, bit, bytes(raw[max(i - 10, 0) : i + 10])))
    assert not silent, silent[:10]


# written by uniopt before the header checksum (file format version 1): SGD, lr 0.01, step 3
LEGACY_V1_FILE = base64.b64decode(
    "sAMAAAAAAAB7Il9fbWV0YWRhdGFfXyI6eyJ1bmlvcHQuZm9ybWF0IjoidW5pb3B0LnN0YXRlLWZpbGUiLCJ1bmlv"
    "cHQudmVyc2lvbiI6IjEiLCJ1bmlvcHQuY29udGVudCI6IntcImZvcm1hdFwiOlwidW5pb3B0Lm9wdGltaXplclwi"
    "LFwidmVyc2lvblwiOjEsXCJsb3NzX3NjYWxlXCI6bnVsbCxcImN1c3RvbV9zdGF0ZVwiOnt9LFwiYWxnb3JpdGht"
    "XCI6XCJzZ2RcIixcImZsYXZvclwiOm51bGwsXCJzdGVwX2NvdW50XCI6MyxcInBhcmFtX2dyb3Vwc1wiOlt7XCJs"
    "clwiOjAuMDEsXCJtb21lbnR1bVwiOjAuOSxcImRhbXBlbmluZ1wiOjAuMCxcIndlaWdodF9kZWNheVwiOjAuMCxc"
    "Im5lc3Rlcm92XCI6ZmFsc2UsXCJtYXhpbWl6ZVwiOmZhbHNlLFwibHJfaW5fbW9tZW50dW1cIjpmYWxzZSxcImdy"
    "YWRfY2VudHJhbGl6YXRpb25cIjpmYWxzZSxcInBhcmFtc1wiOltcIndcIl19XSxcInN0YXRlXCI6e1wid1wiOntc"
    "InN0ZXBcIjozLFwibW9tZW50dW1fYnVmZmVyXCI6e1wiJGFycmF5XCI6XCJzdGF0ZS93L21vbWVudHVtX2J1ZmZl"
    "clwifX19fSIsInVuaW9wdC5pbmZvIjoie1wia2luZFwiOlwib3B0aW1pemVyXCIsXCJwYXJ0c1wiOlt7XCJwYXRo"
    "XCI6W10sXCJraW5kXCI6XCJvcHRpbWl6ZXJcIixcImNsYXNzXCI6XCJTR0RcIixcIm1vZHVsZVwiOlwidW5pb3B0"
    "LmFsZ29yaXRobXMuc2dkXCIsXCJwYXJhbWV0ZXJzXCI6W1tcIndcIixbM10sXCJmbG9hdDY0XCIsMCxcIm51bXB5"
    "XCJdXSxcImFsZ29yaXRobVwiOlwic2dkXCIsXCJmbGF2b3JcIjpudWxsLFwic3RlcF9jb3VudFwiOjMsXCJncm91"
    "cHNcIjoxLFwic3RlcHBlZFwiOjF9XX0iLCJ1bmlvcHQuY3JjMzIiOiJ7XCJzdGF0ZS93L21vbWVudHVtX2J1ZmZl"
    "clwiOjM3MjM1NTc0NX0ifSwic3RhdGUvdy9tb21lbnR1bV9idWZmZXIiOnsiZHR5cGUiOiJGNjQiLCJzaGFwZSI6"
    "WzNdLCJkYXRhX29mZnNldHMiOlswLDI0XX19IK5H4XoUrvU/rkfhehSu5T+uR+F6FK4FwA=="
)


def test_version_1_files_without_a_header_checksum_still_load(tmp_path):
    legacy = tmp_path / "v1.safetensors"
    legacy.write_bytes(LEGACY_V1_FILE)
    assert io.read_header(legacy).metadata["uniopt.version"] == "1"
    assert io_safetensors.DIGEST_KEY not in io.read_header(legacy).metadata
    sd = uniopt.load(legacy)
    new = uniopt.load(_sgd_file(tmp_path))
    assert sd["step_count"] == new["step_count"] == 3
    assert sd["param_groups"][0]["lr"] == 0.01 and sd["param_groups"][0]["params"] == ["w"]
    np.testing.assert_array_equal(
        sd["state"]["w"]["momentum_buffer"], new["state"]["w"]["momentum_buffer"]
    )
    opt = uniopt.SGD({"w": np.zeros(3)}, lr=0.5, momentum=0.9)
    assert uniopt.load(legacy, into=opt).complete and opt.param_groups[0]["lr"] == 0.01
    # the same header claiming version 2 has no checksum to check: refused
    claims_v2 = tmp_path / "v2.safetensors"
    claims_v2.write_bytes(
        _header_edit(legacy, _meta("uniopt.version", str(io.FILE_VERSION)), sign=False)
    )
    with pytest.raises(io.StateFileError, match="must carry uniopt.header-sha256"):
        uniopt.load(claims_v2)


def _crafted_file(tmp_path):
    path = tmp_path / "crafted.safetensors"
    uniopt.save({"e": np.zeros(0, np.float32), "w": np.ones(2)}, path)
    return path


def _entry_edit(name, **fields):
    def edit(header):
        header[name].update(fields)

    return edit


CRAFTED = {
    "huge shape with a zero": _entry_edit("e", shape=[2**62, 0]),
    "2**64 with a zero": _entry_edit("e", shape=[2**64, 0]),
    "product overflows": _entry_edit("e", shape=[2**40, 2**40, 0]),
    "65 dimensions": _entry_edit("e", shape=[0] * 65),
    "33 dimensions": _entry_edit("e", shape=[0] + [1] * 32),
    "negative dimension": _entry_edit("e", shape=[-1]),
    "float dimension": _entry_edit("e", shape=[0.0]),
    "string dimension": _entry_edit("e", shape=["0"]),
    "bool dimension": _entry_edit("e", shape=[False]),
    "shape not a list": _entry_edit("e", shape=0),
    "dtype a list": _entry_edit("e", dtype=["F32"]),
    "dtype null": _entry_edit("e", dtype=None),
    "dtype unknown": _entry_edit("e", dtype="F128"),
    "offsets past the end": _entry_edit("e", data_offsets=[10**6, 10**6]),
    "offsets huge": _entry_edit("e", data_offsets=[2**70, 2**70]),
    "offsets negative": _entry_edit("e", data_offsets=[-1, -1]),
    "offsets reversed": _entry_edit("w", data_offsets=[16, 0]),
    "three offsets": _entry_edit("e", data_offsets=[0, 0, 0]),
    "overlapping": _entry_edit("e", dtype="F64", shape=[1], data_offsets=[8, 16]),
    "entry not an object": lambda h: h.update(e=[0, 0]),
    "extra field": _entry_edit("e", extra=1),
    "tagged dtype a list": _meta("uniopt.dtypes", json.dumps({"e": ["bfloat16"]})),
    "tagged dtype mismatched": _meta("uniopt.dtypes", json.dumps({"e": "bfloat16"})),
    "metadata not strings": _meta("uniopt.info", {"parts": []}),
    "info parts malformed": _meta("uniopt.info", json.dumps({"parts": [{"path": 3}]})),
}


@pytest.mark.parametrize("kind", CRAFTED)
def test_crafted_shapes_dtypes_and_offsets_are_state_file_errors(kind, tmp_path):
    """Signed (checksum recomputed) files with malformed entries: a StateFileError from
    every reader, never a NumPy ValueError, TypeError or OverflowError."""
    good = _crafted_file(tmp_path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(_header_edit(good, CRAFTED[kind]))
    for read in (uniopt.load, io.read_info):
        with pytest.raises(io.StateFileError) as error:
            read(bad)
        assert str(bad) in str(error.value)


def test_too_many_dimensions_cannot_be_saved(tmp_path):
    with pytest.raises(TypeError, match="33 dimensions"):
        uniopt.save({"x": np.zeros((1,) * 33)}, tmp_path / "x.safetensors")
    uniopt.save({"x": np.zeros((1,) * 32)}, tmp_path / "x.safetensors")
    assert uniopt.load(tmp_path / "x.safetensors")["x"].shape == (1,) * 32


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
def test_save_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    path = tmp_path / "opt.safetensors"
    uniopt.save({"a": 1}, path)
    for mode in (0o640, 0o600, 0o664):
        os.chmod(path, mode)
        uniopt.save({"a": mode}, path)
        assert stat.S_IMODE(os.stat(path).st_mode) == mode and uniopt.load(path)["a"] == mode


@pytest.mark.skipif(os.name != "posix", reason="POSIX symlinks")
def test_save_writes_through_a_symlink(tmp_path):
    real = tmp_path / "real" / "opt.safetensors"
    real.parent.mkdir()
    uniopt.save({"a": 1}, real)
    os.chmod(real, 0o640)
    # a relative symlink, and a link to the link: the file they name is replaced
    link = tmp_path / "link.safetensors"
    link.symlink_to(os.path.join("real", "opt.safetensors"))
    chain = tmp_path / "chain.safetensors"
    chain.symlink_to("link.safetensors")
    for k, target in enumerate((link, chain), start=3):
        uniopt.save({"a": k}, target)
        assert link.is_symlink() and os.readlink(link) == os.path.join("real", "opt.safetensors")
        assert chain.is_symlink() and os.readlink(chain) == "link.safetensors"
        assert uniopt.load(real)["a"] == k and uniopt.load(target)["a"] == k
        assert stat.S_IMODE(os.stat(real).st_mode) == 0o640
    assert _temporaries(tmp_path) == [] and _temporaries(real.parent) == []
    # a dangling link creates the file it names
    dangling = tmp_path / "dangling.safetensors"
    dangling.symlink_to(os.path.join("real", "new.safetensors"))
    uniopt.save({"a": 5}, dangling)
    assert dangling.is_symlink() and uniopt.load(real.parent / "new.safetensors")["a"] == 5
    # a loop of links is an error, and nothing is written
    loop = tmp_path / "loop.safetensors"
    loop.symlink_to("loop.safetensors")
    with pytest.raises(OSError, match="symbolic links"):
        uniopt.save({"a": 6}, loop)
    assert loop.is_symlink() and _temporaries(tmp_path) == []
