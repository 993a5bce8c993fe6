"""Every fast mode gives the plain mode's numbers: the zero-copy torch layout, the
compiled torch step, and chunk sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from uniopt.parity.cases import CASES

torch = pytest.importorskip("torch")
SHAPES = [(6, 5), (7,), (3, 2, 2), (1,)]


def train(case, compile, dtype=torch.float64, steps=6, rebind_at=None):
    rng = np.random.default_rng(0)
    params = [torch.nn.Parameter(torch.tensor(rng.standard_normal(s), dtype=dtype)) for s in SHAPES]
    opt = case.build(params) if not compile else _compiled(case, params)
    for t in range(steps):
        if t == rebind_at:  # the user replaces a parameter's storage: uniopt re-binds
            with torch.no_grad():
                params[1].data = params[1].data.clone() * 1.0
        for p in params:
            p.grad = torch.tensor(rng.standard_normal(tuple(p.shape)), dtype=dtype)
        opt.step()
    return [p.detach().clone() for p in params], opt


def _compiled(case, params):
    if case.algorithm == "lookahead":
        pytest.skip("LookAhead's inner optimizer takes compile=")
    return type(case.build([torch.zeros(1)]))(params, compile=True, **case.options)


def test_parameters_are_views_of_one_flat_buffer_and_survive_rebinding():
    case = next(c for c in CASES if c.id == "adamw-amsgrad")
    plain, opt = train(case, compile=False)
    (segment,) = opt._segments[0]
    assert segment.flat is not None
    rebound, opt2 = train(case, compile=False, rebind_at=3)
    for a, b in zip(plain, rebound):
        assert torch.equal(a, b)
    assert all(
        opt2._segments[0][0].adapter.is_view_of(p.detach(), opt2._segments[0][0].flat, s.offset)
        for p, s in zip(opt2.param_groups[0]["params"], opt2._segments[0][0].layout.spans)
    )


@pytest.mark.parametrize(
    "case_id",
    [
        "adamw-amsgrad",
        "sgd-nesterov",
        "lamb-default",
        "rmsprop-centered-momentum",
        "lars_momentum-coeff",
    ],
)
def test_compiled_step_equals_the_plain_step(case_id):
    case = next(c for c in CASES if c.id == case_id)
    torch._dynamo.reset()
    plain, _ = train(case, compile=False)
    fast, opt = train(case, compile=True)
    for a, b in zip(plain, fast):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-13, atol=1e-15)
    (segment,) = opt._segments[0]
    assert segment.compile and len(segment._compiled) == 1  # compiled once, reused


@pytest.mark.parametrize("case_id", ["adamw-amsgrad", "lamb-default", "lars_momentum-coeff"])
def test_compiled_step_with_a_float32_master_equals_the_plain_step(case_id):
    """bfloat16 parameters with ``multi_precision``: the compiled step takes its scalars
    in the master copy's float32 (in bfloat16, beta2 = 0.999 would round to 1)."""
    case = next(c for c in CASES if c.id == case_id)
    torch._dynamo.reset()
    runs = []
    for compile in (False, True):
        rng = np.random.default_rng(0)
        params = [
            torch.nn.Parameter(torch.tensor(rng.standard_normal(s), dtype=torch.bfloat16))
            for s in SHAPES
        ]
        opt = type(case.build([torch.zeros(1)]))(
            params, compile=compile, multi_precision=True, **case.options
        )
        for _ in range(4):
            for p in params:
                g = rng.standard_normal(tuple(p.shape))
                p.grad = torch.tensor(g, dtype=torch.bfloat16)
            opt.step()
        (segment,) = opt._segments[0]
        runs.append((segment.state["master"].clone(), [p.detach().clone() for p in params]))
        assert segment.compile == compile
    (plain_master, plain), (fast_master, fast) = runs
    # float32 arithmetic compiled by inductor differs from eager by a few ulps a step
    torch.testing.assert_close(fast_master, plain_master, rtol=1e-5, atol=1e-5)
    for a, b in zip(plain, fast):
        torch.testing.assert_close(a, b, rtol=0.01, atol=0.01)  # the master rounded


def test_compiled_lamb_over_many_tensors_takes_the_replay_in_passes():
    """torch.compile's time grows with the tensors a step with per-tensor sums takes;
    past 8 the run is replayed eagerly instead, with the same numbers."""
    import uniopt

    case = next(c for c in CASES if c.id == "lamb-default")
    shapes = [(4, 3)] * 12
    runs = []
    for compile in (False, True):
        rng = np.random.default_rng(1)
        params = [torch.nn.Parameter(torch.tensor(rng.standard_normal(s))) for s in shapes]
        opt = uniopt.LAMB(params, compile=compile, **case.options)
        grads = np.random.default_rng(2)
        for _ in range(3):
            for p in params:
                p.grad = torch.tensor(grads.standard_normal(tuple(p.shape)))
            opt.step()
        runs.append(([p.detach().clone() for p in params], opt))
    for a, b in zip(runs[0][0], runs[1][0]):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)
    (segment,) = runs[1][1]._segments[0]
    assert [k[0] for k in segment._compiled] == ["plan"]  # nothing compiled


def test_compiled_steps_of_many_segments_do_not_exhaust_torch_recompiles():
    """torch caps recompilations per code object (8): every segment compiles alone."""
    import uniopt

    torch._dynamo.reset()
    groups = [{"params": [torch.nn.Parameter(torch.ones(3 + i))]} for i in range(10)]
    opt = uniopt.AdamW(groups, lr=0.1, compile=True)
    for g in groups:
        g["params"][0].grad = torch.ones_like(g["params"][0])
    opt.step()
    expected = 1 - 0.1 * 0.01 - 0.1 * 1 / (1 + 1e-8)  # one AdamW step from 1 with g = 1
    for g in groups:
        torch.testing.assert_close(
            g["params"][0].detach(), torch.full_like(g["params"][0], expected)
        )
    assert all(s.compile for segments in opt._segments for s in segments)


def _peak_extra_bytes(step) -> int:
    """The resident-set peak during ``step()`` above the resident set before (Linux)."""
    import ctypes
    import gc
    from pathlib import Path

    def status(field):
        line = next(
            x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field)
        )
        return int(line.split()[1]) * 1024

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap pages go back: reuse shows as growth
    Path("/proc/self/clear_refs").write_text("5")  # resets the high-water mark
    before = status("VmRSS:")
    step()
    return status("VmHWM:") - before


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_compiled_lamb_keeps_no_parameter_sized_intermediate():
    """A compiled step with per-tensor sums runs as two kernels, the sums and then the
    update given them, so LAMB's direction is never stored (as one kernel it took 100%
    of the parameters' bytes); the numbers are the eager step's, as the float64 LAMB
    oracle's (tests/test_parity.py) are."""
    import uniopt

    n = 1 << 23  # 32 MiB of float32 parameters
    runs = []
    for compile in (False, True):
        p = torch.nn.Parameter(torch.linspace(-1, 1, n))
        opt = uniopt.LAMB([p], lr=1e-2, weight_decay=0.1, compile=compile)
        p.grad = torch.cos(torch.arange(n, dtype=torch.float32))
        opt.step()
        opt.step()
        runs.append((p, opt))
    (p, opt), (fast, compiled) = runs
    assert _peak_extra_bytes(compiled.step) < 0.1 * 4 * n
    opt.step()
    torch.testing.assert_close(fast.detach(), p.detach(), rtol=1e-6, atol=1e-7)
