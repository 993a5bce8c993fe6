"""Zero-copy inputs give the plain mode's numbers, bit for bit: NumPy parameters and
gradients carved from one buffer are updated in place of a gathered copy, and torch
gradients become views of the segment's gradient buffer (so the next backward pass
accumulates straight into it), whatever the user does to ``.grad`` in between."""

from __future__ import annotations

import numpy as np
import pytest

from uniopt.parity.cases import CASES

SHAPES = [(6, 5), (7,), (3, 2, 2), (1,)]
CASE_IDS = ["adamw-amsgrad", "sgd-nesterov", "lamb-default", "rmsprop-centered-momentum"]


def case(case_id):
    return next(c for c in CASES if c.id == case_id)


def numpy_run(case_id, carved, steps=5, same_grads=False, rewind=None):
    """Grads carved views of one buffer (``carved``; made once and refilled with
    ``same_grads``) or copies; with ``rewind=t`` the state saved after step t-1 is
    loaded again after step t (new state arrays under the same segment)."""
    rng = np.random.default_rng(0)
    sizes = [int(np.prod(s)) for s in SHAPES]
    cuts = np.cumsum(sizes)[:-1]
    flat = rng.standard_normal(sum(sizes))
    if carved:  # views of one buffer, as np.split gives
        params = [p.reshape(s) for p, s in zip(np.split(flat, cuts), SHAPES)]
    else:
        params = [p.reshape(s).copy() for p, s in zip(np.split(flat, cuts), SHAPES)]
    opt = case(case_id).build(params)
    flat_grad = np.empty_like(flat)
    views = [g.reshape(s) for g, s in zip(np.split(flat_grad, cuts), SHAPES)]
    saved = None
    for t in range(steps):
        flat_grad[...] = rng.standard_normal(flat.size)
        if not same_grads:
            views = [g.reshape(s) for g, s in zip(np.split(flat_grad, cuts), SHAPES)]
        if t == rewind:
            saved = opt.state_dict()
        opt.step(views if carved else [g.copy() for g in views])
        if t == rewind:
            opt.load_state_dict(saved)
    return params, opt


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_numpy_arrays_carved_from_one_buffer_are_updated_in_place(case_id):
    plain, _ = numpy_run(case_id, carved=False)
    carved, opt = numpy_run(case_id, carved=True)
    (segment,) = opt._segments[0]
    assert segment.flat is not None and np.shares_memory(segment.flat, carved[0])
    for a, b in zip(plain, carved):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case_id", [*CASE_IDS, "lookahead-adamw-first-step"])
def test_the_same_gradient_views_and_new_state_arrays_give_the_plain_numbers(case_id):
    """A step reuses its blocks' views of the parameters, gradients and state while
    these are the same arrays: gradients refilled in place are read anew, and state
    arrays replaced by ``load_state_dict`` (or LookAhead's slow weights, synced through
    the same blocks) are the ones updated."""
    plain, _ = numpy_run(case_id, carved=False, steps=7, rewind=3)
    carved, opt = numpy_run(case_id, carved=True, steps=7, same_grads=True, rewind=3)
    for a, b in zip(plain, carved):
        np.testing.assert_array_equal(a, b)
    inner = getattr(opt, "inner", opt)
    (segment,) = inner._segments[0]
    assert segment._views  # the views were made once and reused


torch_cases = pytest.mark.parametrize("case_id", CASE_IDS)


def torch_run(case_id, repoint, steps=6):
    """Grads set each step: fresh tensors (``repoint=False``), or accumulated into the
    existing ``.grad`` after an in-place zeroing, as ``zero_grad(set_to_none=False)``
    and gradient accumulation do."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    params = [torch.nn.Parameter(torch.tensor(rng.standard_normal(s))) for s in SHAPES]
    opt = case(case_id).build(params)
    for t in range(steps):
        new = [torch.tensor(rng.standard_normal(s)) for s in SHAPES]
        for p, g in zip(params, new):
            if repoint and p.grad is not None and t != 3:  # step 3: the user drops .grad
                p.grad.zero_()
                p.grad += g
            else:
                p.grad = g
        opt.step()
    return params, opt


@torch_cases
def test_torch_grads_become_views_of_the_segment_buffer(case_id):
    torch = pytest.importorskip("torch")
    plain, _ = torch_run(case_id, repoint=False)
    fast, opt = torch_run(case_id, repoint=True)
    for a, b in zip(plain, fast):
        assert torch.equal(a.detach(), b.detach())
    (segment,) = opt._segments[0]
    assert all(p.grad.untyped_storage().data_ptr() == segment._grads.data_ptr() for p in fast)
    segment._grads.fill_(1.0)
    opt.zero_grad(set_to_none=False)  # one call on the whole buffer
    assert torch.count_nonzero(segment._grads) == 0
    assert all(p.grad.untyped_storage().data_ptr() == segment._grads.data_ptr() for p in fast)
    opt.zero_grad()
    assert all(p.grad is None for p in fast)


def test_torch_grads_that_are_views_of_another_buffer_are_left_alone():
    torch = pytest.importorskip("torch")
    import uniopt

    bucket = torch.arange(8, dtype=torch.float64)  # e.g. DDP's gradient_as_bucket_view
    params = [torch.nn.Parameter(torch.zeros(4, dtype=torch.float64)) for _ in range(2)]
    opt = uniopt.SGD(params, lr=0.5)
    params[0].grad, params[1].grad = bucket[4:], bucket[:4]  # not in parameter order
    opt.step()
    assert params[0].grad.data_ptr() == bucket[4:].data_ptr()
    assert torch.equal(params[0].detach(), -0.5 * bucket[4:])
    assert torch.equal(params[1].detach(), -0.5 * bucket[:4])


def test_compile_on_numpy_arrays_of_one_buffer_runs_eagerly():
    """compile=True is torch's; NumPy arrays that share a buffer step as without it."""
    case = next(c for c in CASES if c.id == "adamw-amsgrad")
    plain, _ = numpy_run("adamw-amsgrad", carved=True)
    rng = np.random.default_rng(0)
    sizes = [int(np.prod(s)) for s in SHAPES]
    cuts = np.cumsum(sizes)[:-1]
    flat = rng.standard_normal(sum(sizes))
    params = [p.reshape(s) for p, s in zip(np.split(flat, cuts), SHAPES)]
    opt = type(case.build([np.zeros(1)]))(params, compile=True, **case.options)
    flat_grad = np.empty_like(flat)
    for _ in range(5):
        flat_grad[...] = rng.standard_normal(flat.size)
        opt.step([g.reshape(s) for g, s in zip(np.split(flat_grad, cuts), SHAPES)])
    for a, b in zip(plain, params):
        np.testing.assert_array_equal(a, b)
