"""Adversarial attacks, input corruptions and robustness evaluation.

Attacks are configuration objects with keyword-only constructors, called as
``attack(model, x, y)`` for one radius or ``attack.sweep(model, x, y, epsilons)`` for a list
of batches, one per radius:

- :class:`FGSM`, :class:`IFGSM`, :class:`PGD` (``gradient.py``): fixed-budget gradient attacks in
  l_inf and l_2.
- :class:`DeepFool`, :class:`FMN` (``deepfool.py``, ``minnorm.py``): minimum-norm attacks.
- :class:`GaussianNoise` (``noise.py``): Gaussian noise at a standard deviation or an SNR.
- :class:`TransferAttack`, :func:`transfer_accuracy` (``transfer.py``): black-box transfer.
- :func:`accuracy_vs_epsilon` (``evaluate.py``): tidy result rows for every model, radius, seed.
- :class:`ReliabilityWarning` and the checks of ``checks.py``: AutoAttack-style warnings.
- :class:`Normalize` (``normalize.py``): attack in raw input space, feed normalised inputs.
- :func:`build_attack` (``factory.py``): an attack from its name (:data:`ATTACK_NAMES`) and settings.
- :class:`APGD` (``apgd.py``), :class:`Square` (``square.py``), :class:`FAB` (``fab.py``) and
  :class:`AutoAttack` (``autoattack.py``): robustness measured to the field's standard.
"""

from .apgd import APGD, APGDResult, apgd_checkpoints, dlr_loss, targeted_dlr_loss
from .autoattack import (
    AutoAttack,
    AutoAttackResult,
    BlackBoxWarning,
    LargeEpsilonCheck,
    LargeEpsilonWarning,
    RandomizedModelWarning,
    VanishingGradientWarning,
    warn_if_vanishing_gradients,
)
from .checks import (
    ReliabilityWarning,
    check_model,
    warn_if_probabilities,
    warn_if_randomized,
    warn_if_training,
    warn_if_transfer_beats_whitebox,
    warn_if_zero_gradients,
)
from .deepfool import DeepFool
from .factory import ATTACK_NAMES, build_attack
from .fab import FAB, project_on_hyperplane_box
from .evaluate import accuracy_vs_epsilon, attack_label, predict, run_sweep
from .gradient import FGSM, IFGSM, PGD, GradientAttack, attack_loss, fgsm, norm_name
from .minnorm import FMN
from .square import Square, SquareResult, square_fraction
from .noise import GaussianNoise, gaussian_noise, snr_db
from .normalize import Normalize, normalized
from .transfer import TransferAttack, transfer_accuracy

__all__ = [
    "FGSM",
    "fgsm",
    "IFGSM",
    "PGD",
    "GradientAttack",
    "attack_loss",
    "norm_name",
    "GaussianNoise",
    "gaussian_noise",
    "snr_db",
    "TransferAttack",
    "transfer_accuracy",
    "accuracy_vs_epsilon",
    "run_sweep",
    "predict",
    "attack_label",
    "Normalize",
    "normalized",
    "ReliabilityWarning",
    "check_model",
    "warn_if_training",
    "warn_if_probabilities",
    "warn_if_zero_gradients",
    "warn_if_randomized",
    "warn_if_transfer_beats_whitebox",
    "DeepFool",
    "FMN",
    "ATTACK_NAMES",
    "build_attack",
    "APGD",
    "APGDResult",
    "apgd_checkpoints",
    "dlr_loss",
    "targeted_dlr_loss",
    "Square",
    "SquareResult",
    "square_fraction",
    "FAB",
    "project_on_hyperplane_box",
    "AutoAttack",
    "AutoAttackResult",
    "LargeEpsilonCheck",
    "BlackBoxWarning",
    "LargeEpsilonWarning",
    "RandomizedModelWarning",
    "VanishingGradientWarning",
    "warn_if_vanishing_gradients",
]
