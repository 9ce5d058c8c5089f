"""Argument checks shared by the model constructors (on top of ``deepmargin.checks``, whose ``check_bool`` is re-exported)."""

from __future__ import annotations

from collections.abc import Sequence

from ..checks import check_bool, check_int, check_real


def check_num_classes(num_classes: object, owner: str) -> int:
    """Return ``num_classes`` if it is an int >= 2, else raise."""
    return check_int(num_classes, "num_classes", owner, low=2)


def check_input_shape(input_shape: object, owner: str) -> tuple[int, ...]:
    """Return ``input_shape`` as a tuple of positive ints (one sample, no batch axis)."""
    ok = isinstance(input_shape, Sequence) and not isinstance(input_shape, str) and len(input_shape) > 0
    if ok:
        ok = all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in input_shape)
    if not ok:
        raise ValueError(
            f"The 'input_shape' parameter of {owner} must be a non-empty sequence of positive ints "
            f"(one sample, without the batch axis), e.g. (1, 28, 28). Got {input_shape!r} instead."
        )
    return tuple(int(s) for s in input_shape)


def check_image_shape(input_shape: tuple[int, ...], owner: str, min_side: int) -> tuple[int, int, int]:
    """Interpret ``input_shape`` as ``(C, H, W)`` (or ``(H, W)`` with one channel)."""
    if len(input_shape) == 2:
        input_shape = (1, *input_shape)
    if len(input_shape) != 3 or min(input_shape[1:]) < min_side:
        raise ValueError(
            f"The 'input_shape' parameter of {owner} must be (C, H, W) or (H, W) with H, W >= {min_side}. "
            f"Got {input_shape!r} instead."
        )
    c, h, w = input_shape
    return c, h, w


def check_dropout(dropout: object, owner: str) -> float:
    """Return ``dropout`` as a float in [0, 1)."""
    return check_real(dropout, "dropout", owner, low=0, high=1, high_open=True, type_exc=ValueError)


def check_image_model(
    owner: str, num_classes: object, input_shape: object, *, min_side: int, dropout: object, batch_norm: object
) -> tuple[tuple[int, ...], int, int, int, float]:
    """The checks every image model runs first: ``(shape, C, H, W, dropout)``, or the error naming the parameter."""
    check_num_classes(num_classes, owner)
    shape = check_input_shape(input_shape, owner)
    c, h, w = check_image_shape(shape, owner, min_side=min_side)
    rate = check_dropout(dropout, owner)
    check_bool(batch_norm, "batch_norm", owner)
    return shape, c, h, w, rate
