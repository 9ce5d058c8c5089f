r"""The dual reweighting loop of Kesidis, Miller & Xiang (Sec. III) as a training option.

Every training sample ``x`` has a weight :math:`\lambda_x`, 1 at the start. Training runs in rounds
of ``round_epochs`` epochs; after each round the margin :math:`\mu_f(x) = f_c(x) - \max_{i \ne c}
f_i(x)` of every training sample is measured (eval mode, its training label ``c``) and every sample
whose constraint :math:`\mu_f(x) \ge \mu` is violated gets a larger weight:

- ``"multiply"``: :math:`\lambda_x \leftarrow \delta \lambda_x` (their step 3, ``delta > 1``);
- ``"add"``: :math:`\lambda_x \leftarrow \lambda_x + \delta` (the additive variant);
- ``"violation"``: :math:`\lambda_x \leftarrow \lambda_x + \delta (\mu - \mu_f(x))` (by the size of
  the violation).

With ``decrease``, a sample whose constraint holds undoes one step (``lambda / delta`` or
``lambda - delta``), never below 1. Training stops when every constraint holds after a round (their
step 2) or after ``max_rounds`` rounds (0: as many as ``epochs`` allows).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..capture import eval_mode
from ..losses.reweighting import RULES, Reweighting
from ..metrics.logit_margin import logit_margins

__all__ = ["Reweighting", "RULES", "training_margins"]  # Reweighting and RULES live in deepmargin.losses.reweighting


@torch.no_grad()
def training_margins(model: nn.Module, x: Tensor, y: Tensor, *, rectify: bool = False, batch_size: int = 512) -> Tensor:
    """``mu_f`` of every ``(x, y)`` by the labels ``y``, in eval mode (each module's own mode is restored)."""
    with eval_mode(model):
        parts = [logit_margins(model(x[s:s + batch_size]), y[s:s + batch_size], rectify=rectify)
                 for s in range(0, len(y), batch_size)]
    return torch.cat(parts) if parts else torch.empty(0, device=x.device)
