"""The output-layer margin of Kesidis, Miller & Xiang: mu_f(x) = f_c(x) - max_{i != c} f_i(x)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..checks import check_bool, check_logits_target, param_error

__all__ = ["logit_margins"]

OWNER = "logit_margins"


def logit_margins(logits: torch.Tensor, target: torch.Tensor | None = None, *, rectify: bool = False) -> torch.Tensor:
    r"""The margin of each row of ``logits`` (Kesidis, Miller & Xiang, eq. (2)).

    .. math:: \mu_f(x) = f_c(x) - \max_{i \ne c} f_i(x)

    with ``c`` the true class ``target`` when given (negative for a misclassified sample) and the
    model's own decision ``argmax_i f_i(x)`` otherwise (then ``mu_f >= 0``, as for unlabelled test
    inputs; a tie between the two top outputs gives 0).

    Args:
        logits: ``(N, C)`` outputs, ``C >= 2``.
        target: int64 ``(N,)`` classes, or None for the model's decisions.
        rectify: apply ``relu`` to the outputs first (their assumption (1), ``f_i >= 0``; needed for
            Theorem 2.1's class-pure radius).

    Returns:
        ``(N,)`` margins, differentiable with respect to ``logits``.

    Example:
        >>> logit_margins(torch.tensor([[3.0, 1.0, -2.0]]))
        tensor([2.])
        >>> logit_margins(torch.tensor([[3.0, 1.0, -2.0]]), torch.tensor([2]), rectify=True)
        tensor([-3.])
    """
    check_bool(rectify, "rectify", OWNER)
    if target is None:
        if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.dim() != 2 or logits.shape[1] < 2:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise param_error(OWNER, "logits", "a floating-point tensor of shape (N, C) with C >= 2", shape)
        target = logits.argmax(dim=1)
    else:
        target = check_logits_target(logits, target, OWNER)
    scores = F.relu(logits) if rectify else logits
    own = scores.gather(1, target[:, None]).squeeze(1)
    rivals = scores.masked_fill(F.one_hot(target, scores.shape[1]).bool(), float("-inf"))
    return own - rivals.amax(dim=1)
