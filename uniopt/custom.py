"""Writing an optimizer once, MindSpore style (seed 003).

Subclass :class:`uniopt.Optimizer`, keep state with :meth:`clone_state`, and write
``construct(gradients)`` with array-API calls over lists of arrays; the helpers apply
the base options the same way for every backend::

    class MyMomentum(uniopt.Optimizer):
        def __init__(self, params, learning_rate, momentum=0.9, weight_decay=0.0):
            super().__init__(params, learning_rate=learning_rate, weight_decay=weight_decay)
            self.moments = self.clone_state("moments", init="zeros")
            self.momentum = momentum

        def construct(self, gradients):
            lr = self.get_lr()
            gradients = self.flatten_gradients(gradients)
            gradients = self.decay_weight(gradients)
            gradients = self.gradients_centralization(gradients)
            gradients = self.scale_grad(gradients)
            for i, (param, grad) in enumerate(zip(self.parameters, gradients)):
                self.moments[i] = self.momentum * self.moments[i] + grad
                self.assign(i, param - lr * self.moments[i])

``construct`` runs inside ``step()`` (with gradients read from ``.grad`` or given to
``step``), under ``no_grad`` on torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from uniopt import lr as lr_forms
from uniopt._adapter import adapter_for


class CustomOptimizerHelpers:
    """The MindSpore ``nn.Optimizer`` helpers, mixed into :class:`uniopt.Optimizer`."""

    # ---- the parameters as one ordered list ---------------------------------------

    def _entries(self) -> list[tuple[str, int, int]]:
        """``(name, group index, position in group)`` in update order (order_params)."""
        entries = [
            (name, gi, pos)
            for gi, group in enumerate(self.param_groups)
            for pos, name in enumerate(group["param_names"])
        ]
        order = getattr(self, "order_params", None)
        if order:
            rank = {name: i for i, name in enumerate(order)}
            entries.sort(key=lambda e: rank.get(e[0], len(rank)))
        return entries

    @property
    def parameters(self) -> list[Any]:
        """The current parameter arrays, in update order."""
        return [
            adapter_for(p := self.param_groups[gi]["params"][pos]).data(p)
            for _, gi, pos in self._entries()
        ]

    def clone_state(self, prefix: str, init: str | float = "zeros") -> list[Any]:
        """One state array per parameter (``init``: "zeros", "ones" or a number), kept in
        ``state_dict()`` under ``prefix``. Assign new arrays into the list to update it."""
        value = {"zeros": 0.0, "ones": 1.0}.get(init, init) if isinstance(init, str) else init
        if isinstance(value, str):
            raise ValueError(f"clone_state: init must be 'zeros', 'ones' or a number, got {init!r}")
        arrays = []
        for p in self.parameters:
            xp = adapter_for(p).namespace(p)
            arrays.append(xp.full(p.shape, float(value), dtype=p.dtype, device=_device(p)))
        self._custom_state[prefix] = arrays
        return arrays

    def assign(self, index: int, value: Any) -> None:
        """Set parameter ``index`` (update order) to ``value``, in place where the
        backend allows (the same Parameter object on torch), else by replacement."""
        name, gi, pos = self._entries()[index]
        group = self.param_groups[gi]
        p = group["params"][pos]
        adapter = adapter_for(p)
        if adapter.mutable:
            adapter.write(adapter.flat_view(adapter.data(p)), adapter.flat(value))
            return
        group["params"][pos] = value
        for segment in self._segments[gi]:
            if pos in segment.positions:
                segment.params[segment.positions.index(pos)] = value

    # ---- the helpers of the seed --------------------------------------------------

    def flatten_gradients(self, gradients: Sequence[Any]) -> list[Any]:
        """The gradients as a list (uniopt already lays parameters out in contiguous
        segments internally, so nothing else is needed)."""
        return list(gradients)

    def decay_weight(self, gradients: Sequence[Any]) -> list[Any]:
        """``g + weight_decay * p`` for each parameter whose group decays it (and, without
        groups under the beta/gamma rule, whose name has neither "beta" nor "gamma")."""
        out = []
        for (name, gi, _), p, g in zip(self._entries(), self.parameters, gradients):
            wd = self.param_groups[gi]["weight_decay"]
            decayed, _ = self._profile(name, p)
            out.append(g + wd * p if decayed and wd else g)
        return out

    def gradients_centralization(self, gradients: Sequence[Any]) -> list[Any]:
        """Centralize the gradients of groups with ``grad_centralization`` (tensors of two
        or more dimensions lose their mean over all axes but the first)."""
        out = []
        for (_, gi, _), g in zip(self._entries(), gradients):
            if self.param_groups[gi]["grad_centralization"] and g.ndim > 1:
                xp = adapter_for(g).namespace(g)
                rows = xp.reshape(g, (g.shape[0], -1))
                g = xp.reshape(rows - xp.mean(rows, axis=1, keepdims=True), g.shape)
            out.append(g)
        return out

    def scale_grad(self, gradients: Sequence[Any]) -> list[Any]:
        """Undo loss scaling: every gradient divided by the loss scale."""
        from uniopt.loss_scale import current

        scale = current(self.loss_scale)
        return list(gradients) if scale == 1.0 else [g / scale for g in gradients]

    def get_lr_parameter(self, param: Any) -> Any:
        """The learning rate (number or schedule) of a parameter, or a list of them for a
        list of parameters."""
        if isinstance(param, (list, tuple)):
            return [self.get_lr_parameter(p) for p in param]
        for group in self.param_groups:
            if any(q is param for q in group["params"]):
                return group["lr"]
        raise ValueError("get_lr_parameter: the parameter is not optimized here")

    @property
    def target(self) -> str:
        """Where parameters are updated, in MindSpore's words: "CPU" or "GPU"."""
        p = self.parameters[0]
        return "GPU" if "cuda" in adapter_for(p).device(p) else "CPU"

    #: MindSpore: deduplicate sparse gradients (uniopt's gradients are dense: no effect)
    unique = True

    def broadcast_params(self, optim_result: Any) -> Any:
        """MindSpore's parameter broadcast after a step; one process needs none, so the
        step's result is returned as it is."""
        return optim_result

    def get_weight_decay(self) -> float | tuple[float, ...]:
        """The weight decay: one float, or one per group when groups differ."""
        decays = tuple(float(g.get("weight_decay", 0.0)) for g in self.param_groups)
        return decays[0] if len(set(decays)) == 1 else decays

    def _custom_step(self, found: dict[str, Any]) -> None:
        gradients = [found[name] for name, _, _ in self._entries()]
        with self._context("no_grad"):
            self.construct(gradients)

    def _current_lr(self) -> float:
        return float(lr_forms.lr_at(self.param_groups[0]["lr"], self._step_count))


def _device(x: Any) -> Any:
    import array_api_compat

    return array_api_compat.device(x)
