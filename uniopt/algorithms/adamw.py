r"""AdamW: Adam with decoupled weight decay.

.. math::

    g_t &\leftarrow \pm g_t \qquad \text{(sign flipped when maximizing)} \\
    m_t &\leftarrow \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
    v_t &\leftarrow \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2,
        \qquad \hat v_t = \max(\hat v_{t-1}, v_t) \ \text{(AMSGrad)} \\
    \theta_t &\leftarrow \theta_{t-1} - \eta\lambda\,\theta_{t-1}
        - \frac{\eta}{1 - \beta_1^t}\,
          \frac{m_t}{\sqrt{v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

The decay :math:`\eta\lambda\theta` is scaled by the (scheduled) learning rate and
never enters the moments, as in torch.optim.AdamW, optax.adamw, Paddle's AdamW and
Keras. MindSpore's ``AdamWeightDecay`` is the same without bias correction
(``flavor="mindspore"``). The rule is Adam's (:mod:`uniopt.algorithms.adam`) with
``decoupled_weight_decay=True``; so are its ``corrected_moments`` (optax's form,
:math:`\theta_t = \theta_{t-1} - \eta\,(\hat m_t / (\sqrt{\hat v_t} + \epsilon) +
\lambda\theta_{t-1})`) and complex parameters (``complex_mode``: real pairs as
torch, conjugate second moments as optax, refused by the other flavors).

Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (ICLR 2019).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from uniopt.algorithms.adam import Adam, AdamRule
from uniopt.flavors import CONJUGATE, NO_COMPLEX, REAL_PAIRS, Default, arguments
from uniopt.transform import functional


@dataclass(frozen=True)
class AdamWRule(AdamRule):
    flavors = {
        "torch": {"weight_decay": 1e-2},
        "optax": {"weight_decay": 1e-4, "corrected_moments": True, "complex_mode": CONJUGATE},
        "paddle": {
            "weight_decay": 1e-2,
            "beta_powers": "running",
            "float32": ("weight_decay",),
            **NO_COMPLEX,
        },
        "oneflow": {"weight_decay": 0.0, **NO_COMPLEX},
        "keras": {"weight_decay": 4e-3, "eps": 1e-7, "eps_hat": True, **NO_COMPLEX},
        "mindspore": {
            "weight_decay": 0.0,
            "eps": 1e-6,
            "do_bias_correction": False,
            "float32": ("lr", "betas", "eps", "weight_decay"),
            **NO_COMPLEX,
        },
    }


class AdamW(Adam):
    r"""AdamW (torch.optim.AdamW semantics): Adam with decoupled weight decay.

    Same arguments as :class:`uniopt.Adam`; ``weight_decay`` (default 1e-2, as in
    torch and Paddle) is the decoupled decay :math:`\lambda`.
    """

    algorithm = "adamw"
    rule = AdamWRule

    def __init__(
        self,
        params: Any,
        lr: Any = Default(1e-3),
        betas: tuple[float, float] = Default((0.9, 0.999)),
        eps: float = Default(1e-8),
        weight_decay: float = Default(1e-2),
        amsgrad: bool = False,
        do_bias_correction: bool = Default(True),
        maximize: bool = False,
        beta_powers: str | None = Default(None),
        eps_hat: bool = Default(False),
        decoupled_weight_decay: bool = True,
        corrected_moments: bool = Default(False),
        bias_correction_mu: bool = True,
        bias_correction_nu: bool = True,
        complex_mode: str | None = Default(REAL_PAIRS),
        *,
        flavor: str | None = None,
        **options: Any,
    ):
        super().__init__(**arguments(locals()))


adamw = functional(AdamW)
