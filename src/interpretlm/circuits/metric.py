"""The normaliser of every circuit effect, ``clean - corrupted``, and when it is too small to trust.

Patching, attribution patching, path patching and circuit discovery report effects as
``(value - corrupted) / (clean - corrupted)``. When the two runs give almost the same metric,
that denominator is a difference of two nearly equal floats and the normalised effects are
float noise (two correct engines then disagree in the second digit). :func:`normaliser`
returns the denominator and, in that case, a message that the caller records on its result
with ``result.warn(message, NoiseWarning)``.
"""

from __future__ import annotations

import torch

from ..errors import InterpretLMWarning
from .pairs import check_denominator

# A gap below this many machine epsilons of the metric's size is float noise. The metric of a
# model in float32 carries an error of about one epsilon of its size (replay vs. one forward per
# patch differ by ~0.3 eps on the tiny models), so at 1000 eps the normalised effects are still
# good to about 1e-3; below it they are not worth reading.
NOISE_EPS = 1e3


class NoiseWarning(InterpretLMWarning):
    """``|clean - corrupted|`` is so small that effects normalised by it are float noise."""


def normaliser(clean_value: float, corrupted_value: float, *, dtype: torch.dtype) -> tuple[float, str | None]:
    """The denominator ``clean - corrupted`` of normalised effects, and a warning message when it is noise.

    Args:
        clean_value: the metric on the clean prompts (a scalar: the mean over prompts).
        corrupted_value: the metric on the corrupted prompts.
        dtype: the dtype the model computes in (its epsilon sets the noise floor).

    Returns:
        ``(clean_value - corrupted_value, message)``; ``message`` is None unless
        ``|clean - corrupted| < 1000 * eps(dtype) * max(|clean|, |corrupted|, 1)``.

    Raises:
        PatchingError: when the two values are equal (the effect is undefined).

    Example:
        >>> import torch
        >>> normaliser(2.0, -1.0, dtype=torch.float32)
        (3.0, None)
        >>> normaliser(0.35, 0.34999, dtype=torch.float32)[1] is not None
        True
    """
    denom = check_denominator(clean_value, corrupted_value)
    scale = max(abs(clean_value), abs(corrupted_value), 1.0)
    floor = NOISE_EPS * torch.finfo(dtype).eps * scale
    if abs(denom) >= floor:
        return denom, None
    dtype_name = str(dtype).replace("torch.", "")
    return denom, (
        f"The metric differs by only {abs(denom):.2g} between clean ({clean_value:.6g}) and corrupted "
        f"({corrupted_value:.6g}) prompts, below the noise floor {floor:.2g} (1000 x the {dtype_name} epsilon x "
        "the metric's size): effects normalised by (clean - corrupted) are float noise here. Pick a corruption "
        "that moves the metric more, a target that tells the two runs apart, or a wider dtype.")
