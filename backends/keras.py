"""The Keras 3 face: ``uniopt.keras.<Algorithm>`` is a ``keras.optimizers.Optimizer``
that runs uniopt's rule.

    import uniopt.keras
    model.compile(optimizer=uniopt.keras.AdamW(1e-3, flavor="torch"), loss="mse")
    model.fit(x, y)

One class per uniopt optimizer class, made here from the classes ``uniopt`` exports
(an algorithm added to uniopt gets its Keras class with no line here), with the
algorithm's own arguments and flavors, registered for Keras serialization under
``"uniopt>Name"``. Keras's base class does what it does for its own optimizers: the
learning rate (a float, a ``LearningRateSchedule`` or a callable; uniopt's ``lr`` is
Keras's ``learning_rate``), the step count, ``clipnorm`` / ``clipvalue`` /
``global_clipnorm``, ``use_ema``, ``loss_scale_factor``, ``gradient_accumulation_steps``,
building, saving and loading. uniopt's part is the update: ``build`` makes each slot of
the rule a Keras variable shaped like its model variable (``add_optimizer_variables``),
and each step runs the rule on every variable's value as one whole tensor
(:func:`uniopt.engine.execute.update_whole`, the engine's form for tensors that keep
their own state: per-tensor norms such as LAMB's and LARS's are the tensor's), in the
backend's array namespace, with the per-step scalars formed from Keras's learning rate
and step count as 0-d arrays. Under JAX that is traced in Keras's jitted train step
(no host sync); on torch it runs under ``no_grad``; on NumPy eagerly. TensorFlow
tensors are outside the Python array API: that backend is refused.

The rule owns weight decay where it has one (``weight_decay``, LARS's
``lars_weight_decay``): Keras's ``exclude_from_weight_decay`` sets it to zero for the
variables it names, and Keras's own decoupled decay is not applied on top. An algorithm
without a ``weight_decay`` argument takes Keras's (Keras's decoupled decay). Nothing
here holds update math.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import array_api_compat

try:
    import keras
except ImportError as error:  # pragma: no cover - the keras and test extras install it
    raise ImportError(
        f"uniopt.keras could not import Keras 3 ({error}): pip install 'uniopt[keras]', "
        "and choose a backend uniopt runs on (KERAS_BACKEND=jax, torch or numpy; Keras "
        "defaults to tensorflow)"
    ) from error
if int(keras.__version__.split(".")[0]) < 3:  # pragma: no cover
    raise ImportError(f"uniopt.keras needs Keras 3, found keras {keras.__version__}")
from keras import ops

import uniopt
from uniopt import validation
from uniopt._adapter import adapter_for
from uniopt.engine.execute import update_whole
from uniopt.norms import is_low_precision
from uniopt.optimizer import Optimizer as UnioptOptimizer
from uniopt.rule import Rule

#: Keras backends whose tensors the array API covers
BACKENDS = ("jax", "torch", "numpy")
#: Keras's own optimizer arguments, handled by its base class (``weight_decay`` is the
#: rule's where the rule has one)
KERAS_ARGUMENTS = (
    "name",
    "clipnorm",
    "clipvalue",
    "global_clipnorm",
    "use_ema",
    "ema_momentum",
    "ema_overwrite_frequency",
    "loss_scale_factor",
    "gradient_accumulation_steps",
)
_KERAS_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(keras.optimizers.Optimizer.__init__).parameters.items()
    if name in KERAS_ARGUMENTS
}
#: options of uniopt's stateful face and what Keras offers instead
_STATEFUL = {
    "grad_clip": "Keras's clipnorm, global_clipnorm or clipvalue",
    "loss_scale": "Keras's loss_scale_factor or keras.optimizers.LossScaleOptimizer",
    "apply_decay_param_fun": "the optimizer's exclude_from_weight_decay(var_list, var_names)",
    "decay_skips_beta_gamma": "the optimizer's exclude_from_weight_decay(var_names=...)",
    "multi_precision": "Keras's mixed precision policies",
}
_UNSET: Any = object()


def check_backend(owner: str) -> None:
    """Refuse Keras backends whose tensors uniopt cannot compute on."""
    backend = keras.backend.backend()
    if backend not in BACKENDS:
        raise RuntimeError(
            f"{owner}: Keras's {backend!r} backend is not supported: uniopt computes with "
            "the Python array API, which covers NumPy, PyTorch and JAX arrays but not "
            "TensorFlow tensors; set KERAS_BACKEND to 'jax', 'torch' or 'numpy' before "
            "keras is imported"
        )


class Optimizer(keras.optimizers.Optimizer):
    """Base of the Keras optimizers running a uniopt rule; each subclass names its
    uniopt optimizer class in ``uniopt_class``."""

    #: the uniopt optimizer class whose arguments, validation, flavors and rule it takes
    uniopt_class: ClassVar[type[UnioptOptimizer]]

    def __init__(self, learning_rate: Any = _UNSET, **kwargs: Any):
        cls = type(self).uniopt_class
        owner = f"uniopt.keras.{type(self).__name__}"
        check_backend(owner)
        if "lr" in kwargs:  # uniopt's name
            if learning_rate is not _UNSET:
                raise TypeError(f"{owner}: give learning_rate or lr, not both")
            learning_rate = kwargs.pop("lr")
        flavor = kwargs.pop("flavor", None)
        base = {k: kwargs.pop(k) for k in KERAS_ARGUMENTS if k in kwargs}
        arguments = _arguments(cls)
        if "weight_decay" in kwargs and "weight_decay" not in arguments:
            base["weight_decay"] = kwargs.pop("weight_decay")  # Keras's decoupled decay
        for name in kwargs:
            if name in _STATEFUL:
                raise TypeError(
                    f"{owner}: {name} is an option of uniopt's stateful face; use {_STATEFUL[name]}"
                )
        validation.known_arguments(owner, kwargs, ["learning_rate", "flavor", *arguments])
        hp, schedule = _hyperparameters(cls, owner, learning_rate, kwargs, flavor)
        if "weight_decay" in arguments:
            base["weight_decay"] = hp[
                "weight_decay"
            ]  # shown as Keras shows it; the rule applies it
        super().__init__(learning_rate=hp["lr"] if schedule is None else schedule, **base)
        self.flavor = flavor
        self._uniopt_hp = {k: v for k, v in hp.items() if k != "lr"}
        #: the rule decays (exclude_from_weight_decay zeroes its decay_key); Keras's own
        #: decoupled decay applies only where the algorithm has no weight_decay argument
        self._rule_decays = cls.rule.decay_key in cls.rule.hyperparameters
        self._keras_decays = "weight_decay" not in arguments
        self._rule = cls.rule.from_group(hp)

    @property
    def rule(self) -> Rule:
        """The uniopt rule this optimizer runs (its static options)."""
        return self._rule

    def build(self, variables: list[Any]) -> None:
        if self.built:
            return
        owner = f"uniopt.keras.{type(self).__name__}"
        for variable in variables:
            dtype = keras.backend.standardize_dtype(variable.dtype)
            if not dtype.startswith(("float", "bfloat")):
                raise TypeError(
                    f"{owner}: variable '{variable.path}' has dtype {dtype}; only real "
                    "floating-point variables can be optimized"
                )
        super().build(variables)
        slots = self._rule.slots()
        names = list(slots)
        initializers = [
            "zeros" if value == 0.0 else keras.initializers.Constant(value)
            for value in slots.values()
        ]
        made = self.add_optimizer_variables(variables, names, initializers) if names else ()
        self._uniopt_slots = [dict(zip(names, per_variable)) for per_variable in zip(*made)] or [
            {} for _ in variables
        ]

    def _apply_weight_decay(self, variables: list[Any]) -> None:
        if self._keras_decays:  # Keras's decoupled decay, for algorithms without one
            super()._apply_weight_decay(variables)

    def _backend_update_step(
        self, grads: list[Any], trainable_variables: list[Any], learning_rate: Any
    ) -> None:
        """The rule on every variable (Keras has applied clipping, loss scaling and
        gradient accumulation): each variable and its slots, as one whole tensor."""
        if not trainable_variables:
            return
        adapter = adapter_for(trainable_variables[0].value)
        lr = ops.convert_to_tensor(learning_rate)
        count = ops.convert_to_tensor(self.iterations)  # completed steps
        scalars: dict[tuple[Any, bool], dict[str, Any]] = {}
        with adapter.no_grad():
            for grad, variable in zip(grads, trainable_variables):
                p = variable.value
                g = ops.cast(grad, variable.dtype)
                xp = array_api_compat.array_namespace(p)
                decayed = not self._rule_decays or self._use_weight_decay(variable)
                key = (p.dtype, decayed)
                if key not in scalars:
                    scalars[key] = self._scalars(xp, p, lr, count, decayed)
                slots = self._uniopt_slots[self._get_variable_index(variable)]
                state = {k: v.value for k, v in slots.items()}
                delta, new_state = update_whole(
                    xp, self._rule, p, g, state, scalars[key], adapter.shard_all_reduce([p])
                )
                self.assign(variable, p + delta)
                for k, v in new_state.items():
                    self.assign(slots[k], v)

    def _scalars(self, xp: Any, like: Any, lr: Any, count: Any, decayed: bool) -> dict[str, Any]:
        """This step's scalars for variables of ``like``'s dtype, as the functional face
        forms them under tracing: the learning rate and the 1-based step as 0-d arrays
        of at least float32, the results cast to the variable's dtype (Python numbers
        stay weak-typed)."""
        dtype = like.dtype
        step_dtype = xp.float32 if is_low_precision(dtype) else dtype
        hp = {k: self._uniopt_hp.get(k) for k in self._rule.hyperparameters if k != "lr"}
        hp["lr"] = xp.astype(lr, step_dtype)
        if not decayed:  # exclude_from_weight_decay
            hp[self._rule.decay_key] = 0.0
        out = self._rule.scalars(hp, xp.astype(count + 1, step_dtype))
        return {k: xp.astype(v, dtype) if hasattr(v, "dtype") else v for k, v in out.items()}

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(self._uniopt_hp)
        config["flavor"] = self.flavor
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any], custom_objects: Any = None) -> Optimizer:
        arguments = _arguments(cls.uniopt_class)
        # JSON has no tuples: a pair (betas) comes back as a list
        config = {
            k: tuple(v) if k in arguments and isinstance(v, list) else v for k, v in config.items()
        }
        return super().from_config(config, custom_objects=custom_objects)


def _arguments(cls: type[UnioptOptimizer]) -> list[str]:
    """The algorithm's own arguments, less ``lr`` (Keras's ``learning_rate``)."""
    return [name for name in cls._argument_names() if name != "lr"]


def _hyperparameters(
    cls: type[UnioptOptimizer],
    owner: str,
    learning_rate: Any,
    given: Mapping[str, Any],
    flavor: str | None,
) -> tuple[dict[str, Any], Any]:
    """The validated hyperparameters (flavor defaults filled in) and the learning-rate
    schedule or callable, if one was given (Keras runs it)."""
    parameters = inspect.signature(cls.__init__).parameters
    hp = {name: given.get(name, parameters[name].default) for name in _arguments(cls)}
    schedule = None
    if learning_rate is _UNSET:
        hp["lr"] = parameters["lr"].default  # the flavor's, or the algorithm's default
    elif isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule) or (
        callable(learning_rate) and not hasattr(learning_rate, "shape")
    ):
        schedule, hp["lr"] = learning_rate, 0.0  # Keras calls it, step by step
    else:
        hp["lr"] = validation.non_negative(owner, "learning_rate", learning_rate)
    hp = cls._validated(hp, owner=owner, flavor=flavor)
    hp["lr"] = float(hp["lr"])  # a plain float, as Keras wants it
    return hp, schedule


def _docstring(cls: type[UnioptOptimizer]) -> str:
    return (
        f"``uniopt.{cls.__name__}`` as a ``keras.optimizers.Optimizer``: its arguments "
        "(``learning_rate`` for ``lr``; the others by keyword), defaults and ``flavor``, "
        "plus Keras's own (``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``use_ema``, "
        "``ema_momentum``, ``ema_overwrite_frequency``, ``loss_scale_factor``, "
        "``gradient_accumulation_steps``, ``name``).\n\n" + (inspect.getdoc(cls) or "")
    )


def _signature(cls: type[UnioptOptimizer]) -> inspect.Signature:
    """``(learning_rate=<default>, *, <the algorithm's arguments>, flavor=None,
    <Keras's arguments>)``, for help() and IDEs."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    own = inspect.signature(cls.__init__).parameters
    out = [
        inspect.Parameter(
            "learning_rate", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=own["lr"].default
        )
    ]
    out += [own[name].replace(kind=keyword) for name in _arguments(cls)]
    out.append(inspect.Parameter("flavor", keyword, default=None))
    out += [inspect.Parameter(k, keyword, default=v) for k, v in _KERAS_DEFAULTS.items()]
    if "weight_decay" not in own:
        out.append(inspect.Parameter("weight_decay", keyword, default=None))
    return inspect.Signature(out)


def keras_class(cls: type[UnioptOptimizer]) -> type[Optimizer]:
    """The Keras optimizer class running ``cls``'s rule, registered as ``uniopt>Name``."""
    namespace = {
        "__module__": __name__,
        "__qualname__": cls.__name__,
        "__doc__": _docstring(cls),
        "__signature__": _signature(cls),
        "uniopt_class": cls,
    }
    made = type(cls.__name__, (Optimizer,), namespace)
    return keras.saving.register_keras_serializable(package="uniopt", name=cls.__name__)(made)


def _unsupported(name: str) -> Callable[..., Any]:
    """What stands for a uniopt class that wraps another optimizer (LookAhead)."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"uniopt.keras.{name}: {name} wraps another optimizer's steps, and a Keras "
            "optimizer's step (its learning rate, step count, clipping, EMA and gradient "
            f"accumulation) belongs to Keras's base class, so there is no Keras {name}; "
            f"use uniopt.{name} (stateful) or uniopt.{name.lower()} (functional) on the "
            "model's arrays"
        )

    refuse.__name__ = refuse.__qualname__ = name
    return refuse


def _uniopt_classes() -> tuple[dict[str, type[UnioptOptimizer]], list[str]]:
    """uniopt's optimizer classes by name, and the names of its wrappers (classes with
    an ``algorithm`` that are no :class:`uniopt.Optimizer`)."""
    classes, wrappers = {}, []
    for name in uniopt.__all__:
        obj = getattr(uniopt, name)
        if not isinstance(obj, type) or obj is UnioptOptimizer:
            continue
        if issubclass(obj, UnioptOptimizer):
            classes[name] = obj
        elif isinstance(getattr(obj, "algorithm", None), str):
            wrappers.append(name)
    return classes, wrappers


_classes, _wrappers = _uniopt_classes()
#: every uniopt optimizer class's Keras twin, by name
CLASSES: dict[str, type[Optimizer]] = {name: keras_class(c) for name, c in _classes.items()}
globals().update(CLASSES)
globals().update({name: _unsupported(name) for name in _wrappers})
__all__ = ["Optimizer", "CLASSES", "check_backend", *CLASSES, *_wrappers]
