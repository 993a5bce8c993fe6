"""uniopt: optimizers and learning-rate schedules written once against the Python
array API standard, running unchanged on NumPy, CuPy, PyTorch and JAX arrays.

Two faces over one engine: stateful optimizers (``uniopt.AdamW(params).step()``)
and pure transforms (``uniopt.adamw().update(grads, state, params)``).
"""

from uniopt import lr_scheduler, port, schedules
from uniopt.algorithms.adabelief import AdaBelief, adabelief
from uniopt.algorithms.adagrad import Adagrad, adagrad
from uniopt.algorithms.adam import Adam, adam
from uniopt.algorithms.adamax import Adamax, AdamaxW, adamax, adamaxw
from uniopt.algorithms.adamw import AdamW, adamw
from uniopt.algorithms.adan import Adan, adan
from uniopt.algorithms.lamb import LAMB, lamb
from uniopt.algorithms.lars import LarsMomentum, lars_momentum
from uniopt.algorithms.lookahead import LookAhead, lookahead
from uniopt.algorithms.nadam import NAdam, NAdamW, nadam, nadamw
from uniopt.algorithms.optimistic_adam import OptimisticAdam, optimistic_adam
from uniopt.algorithms.radam import RAdam, radam
from uniopt.algorithms.rmsprop import RMSprop, rmsprop
from uniopt.algorithms.sgd import SGD, sgd
from uniopt.algorithms.yogi import Yogi, yogi
from uniopt.flat import Flat, flatten
from uniopt.gradients import ClipGradByGlobalNorm, ClipGradByNorm, ClipGradByValue
from uniopt.io import load, save
from uniopt.loss_scale import DynamicLossScale
from uniopt.optimizer import Optimizer
from uniopt.transform import Transform, TransformState, apply_updates
from uniopt.transform import load_state as load_transform_state
from uniopt.transform import state_dict as transform_state_dict

__version__ = "0.1.0"

__all__ = [
    "ClipGradByGlobalNorm",
    "ClipGradByNorm",
    "ClipGradByValue",
    "DynamicLossScale",
    "Flat",
    "flatten",
    "LAMB",
    "SGD",
    "Adagrad",
    "LarsMomentum",
    "LookAhead",
    "RMSprop",
    "adagrad",
    "lamb",
    "lars_momentum",
    "lookahead",
    "rmsprop",
    "Adam",
    "AdamW",
    "Optimizer",
    "Transform",
    "TransformState",
    "adam",
    "adamw",
    "apply_updates",
    "load",
    "load_transform_state",
    "lr_scheduler",
    "port",
    "save",
    "schedules",
    "sgd",
    "NAdam",
    "NAdamW",
    "nadam",
    "nadamw",
    "RAdam",
    "radam",
    "Adamax",
    "AdamaxW",
    "adamax",
    "adamaxw",
    "AdaBelief",
    "adabelief",
    "Yogi",
    "yogi",
    "Adan",
    "adan",
    "OptimisticAdam",
    "optimistic_adam",
    "transform_state_dict",
]


def __getattr__(name: str) -> object:
    """``uniopt.keras`` on first use (importing it imports Keras, which ``import uniopt``
    never does)."""
    if name == "keras":
        import importlib

        return importlib.import_module("uniopt.keras")
    raise AttributeError(f"module 'uniopt' has no attribute {name!r}")
