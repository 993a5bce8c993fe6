"""The engine: segment tables, blocks, per-tensor reductions and chunked execution."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import to_backend, to_numpy

import uniopt
from uniopt._adapter import adapter_for
from uniopt.engine.layout import Layout

SHAPES = [(3, 4), (5,), (2, 3, 2), (1,), (0,), (40,)]
NAMES = [f"t{i}" for i in range(len(SHAPES))]


def covered(layout, blocks):
    """Every element index each block claims, from its pieces."""
    out = []
    for block in blocks:
        assert block.stop - block.start == sum(p.hi - p.lo for p in block.pieces)
        for p in block.pieces:
            out += list(
                range(layout.spans[p.index].offset + p.lo, layout.spans[p.index].offset + p.hi)
            )
    return out


@pytest.mark.parametrize("limit", [None, 1, 7, 12, 64, 1000])
@pytest.mark.parametrize("whole", [False, True])
def test_blocks_cover_each_element_once_in_order(limit, whole):
    layout = Layout.of(NAMES, SHAPES)
    for first, last in [(0, len(SHAPES)), (1, 3), (5, 6), (2, 2)]:
        blocks = list(layout.blocks(first, last, limit, whole))
        expected = list(
            range(
                layout.spans[first].offset if first < last else 0,
                layout.spans[last - 1].stop if first < last else 0,
            )
        )
        assert covered(layout, blocks) == expected
        for block in blocks:
            if limit is not None and not whole:
                assert block.stop - block.start <= limit
            if whole:
                assert block.whole_tensors
                spans = [layout.spans[p.index] for p in block.pieces]
                assert all(p.hi == s.size for p, s in zip(block.pieces, spans))
                if limit is not None and len(block.pieces) > 1:
                    assert block.stop - block.start <= limit


def test_per_tensor_reductions_through_the_segment_table(backend):
    rng = np.random.default_rng(1)
    layout = Layout.of(NAMES, SHAPES)
    values = rng.standard_normal(layout.size)
    x = to_backend(backend, values)
    xp = adapter_for(x).namespace(x)
    for block in layout.blocks(0, len(SHAPES), 20, whole_tensors=True):
        part = x[block.start : block.stop]
        sums = to_numpy(block.tensor_sums(xp, part * part))
        expected = [
            np.sum(values[layout.spans[p.index].offset : layout.spans[p.index].stop] ** 2)
            for p in block.pieces
        ]
        np.testing.assert_allclose(sums, expected, rtol=1e-13)
        expanded = to_numpy(block.expand(xp, block.tensor_sums(xp, part)))
        sizes = [p.hi - p.lo for p in block.pieces]
        np.testing.assert_allclose(
            expanded, np.repeat(to_numpy(block.tensor_sums(xp, part)), sizes)
        )


@pytest.mark.parametrize("name", ["numpy", "torch"])
@pytest.mark.parametrize("opt", [uniopt.AdamW, uniopt.SGD])
def test_chunked_execution_is_bitwise_equal_to_one_block(name, opt, monkeypatch):
    """Cutting segments into tiny blocks (inside tensors too) changes no bit."""
    from conftest import require

    require(name)
    rng = np.random.default_rng(2)
    init = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(5)]

    def run(chunk):
        params = [to_backend(name, p) for p in init]
        adapter = adapter_for(params[0])
        monkeypatch.setattr(type(adapter), "chunk_elements", chunk)
        kwargs = {"momentum": 0.9} if opt is uniopt.SGD else {"amsgrad": True}
        o = opt(params, lr=0.1, **kwargs)
        for g in grads:
            o.step([to_backend(name, x) for x in g])
        return [to_numpy(p) for p in o.params], o.state_dict()["state"]

    big, big_state = run(1 << 20)
    small, small_state = run(5)
    for a, b in zip(big, small):
        assert np.array_equal(a, b)
    for n in big_state:
        for k in big_state[n]:
            assert np.array_equal(np.asarray(big_state[n][k]), np.asarray(small_state[n][k]))


def test_segments_split_by_dtype_and_namespace_resolved_once():
    params = {"a": np.ones(3, np.float32), "b": np.ones(2, np.float64), "c": np.ones(4, np.float32)}
    opt = uniopt.Adam(params)
    (segments,) = opt._segments
    assert [s.names for s in segments] == [["a", "c"], ["b"]]
    assert [s.layout.size for s in segments] == [7, 2]
    assert all(s.xp is not None for s in segments)
    opt.step({k: np.ones_like(v) for k, v in params.items()})
    assert params["a"].dtype == np.float32 and params["b"].dtype == np.float64
    assert segments[0].state["exp_avg"].dtype == np.float32


def test_runs_group_tensors_by_gradient_and_step():
    params = [np.ones(2) for _ in range(5)]
    opt = uniopt.SGD(params)
    (segment,) = opt._segments[0]
    segment.steps = [1, 1, 0, 0, 0]
    g = np.ones(2)
    assert segment.runs([g, g, g, None, g]) == [(0, 2), (2, 3), (4, 5)]
    assert segment.runs([None] * 5) == []
