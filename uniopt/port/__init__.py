"""Optimizer state across frameworks: import native optimizer state into uniopt, and
export uniopt optimizers to their twins.

    opt = uniopt.port.from_torch(torch_opt)                   # same nn.Parameters
    torch_opt = uniopt.port.to_torch(opt)                     # torch.optim, state loaded
    opt = uniopt.port.from_optax(opt_state, params, "adamw", learning_rate=1e-3)
    tx, opt_state = uniopt.port.to_optax(opt, jax_params)
    opt = uniopt.port.from_paddle(paddle_opt.state_dict(), params, "AdamW", learning_rate=1e-3)

Everything is matched by parameter name. The algorithm-specific part of each converter
is one table (:data:`TORCH_OPTIMIZERS`, :data:`OPTAX_TRANSFORMS`,
:data:`PADDLE_OPTIMIZERS`): adding an algorithm is adding an entry. No framework is
imported until a converter that needs it is called. See ``docs/porting.md``.
"""

from uniopt.port._optax import OPTAX_TRANSFORMS, OptaxSpec, from_optax, to_optax
from uniopt.port._paddle import PADDLE_OPTIMIZERS, PaddleSpec, from_paddle
from uniopt.port._torch import (
    TORCH_OPTIMIZERS,
    TorchSpec,
    from_torch,
    from_torch_state_dict,
    infer_algorithm,
    to_torch,
    to_torch_state_dict,
)

__all__ = [
    "OPTAX_TRANSFORMS",
    "PADDLE_OPTIMIZERS",
    "TORCH_OPTIMIZERS",
    "OptaxSpec",
    "PaddleSpec",
    "TorchSpec",
    "from_optax",
    "from_paddle",
    "from_torch",
    "from_torch_state_dict",
    "infer_algorithm",
    "to_optax",
    "to_torch",
    "to_torch_state_dict",
]
