"""build_attack: the one name -> attack factory of the commands and studies."""

from __future__ import annotations

import math

import pytest

from deepmargin.attacks import APGD, FAB, FGSM, FMN, IFGSM, PGD, AutoAttack, DeepFool, GaussianNoise, Square
from deepmargin.attacks.factory import ATTACK_NAMES, MIN_NORM_ATTACKS, build_attack

UNBOUNDED = (-math.inf, math.inf)


@pytest.mark.parametrize("name, cls", [("fgsm", FGSM), ("ifgsm", IFGSM), ("pgd", PGD), ("deepfool", DeepFool),
                                       ("fmn", FMN), ("noise", GaussianNoise), ("apgd-ce", APGD), ("apgd-dlr", APGD),
                                       ("apgd-t", APGD), ("fab", FAB), ("square", Square), ("autoattack", AutoAttack)])
@pytest.mark.parametrize("norm, p", [("linf", math.inf), ("l2", 2.0), ("inf", math.inf), (2, 2.0)])
def test_every_name_builds_its_attack(name, cls, norm, p):
    attack = build_attack(name, norm=norm, seed=1)
    assert type(attack) is cls
    if name != "noise":
        assert attack.norm in (p, {math.inf: "linf", 2.0: "l2"}[p])
    assert set(ATTACK_NAMES) == {"fgsm", "ifgsm", "pgd", "deepfool", "fmn", "noise", "apgd-ce", "apgd-dlr", "apgd-t",
                                 "fab", "square", "autoattack"}


def test_the_autoattack_names_configure_their_attacks():
    assert (build_attack("apgd-ce").loss, build_attack("apgd-ce").targeted) == ("ce", False)
    assert (build_attack("apgd-dlr").loss, build_attack("apgd-dlr").targeted) == ("dlr", False)
    assert (build_attack("apgd-t").loss, build_attack("apgd-t").targeted) == ("dlr", True)
    assert build_attack("apgd-ce").steps == 100 and build_attack("apgd-ce", steps=7).steps == 7
    assert build_attack("square", queries=50, seed=3).queries == 50 and build_attack("square", seed=3).seed == 3
    assert build_attack("fab").targeted and build_attack("fab", n_target_classes=2).n_target_classes == 2
    assert build_attack("autoattack", version="fast").version == "fast"


def test_defaults_match_the_commands():
    assert build_attack("pgd").steps == 40 and build_attack("pgd").random_start
    assert build_attack("deepfool").steps == 50 and build_attack("deepfool").overshoot == 0.02
    assert build_attack("fmn").steps == 100
    assert build_attack("ifgsm").steps is None  # Kurakin's rule on bounded inputs
    assert build_attack("ifgsm", bounds=UNBOUNDED).steps == 10
    assert build_attack("ifgsm", bounds=UNBOUNDED, step_size=0.1).steps is None
    assert (build_attack("noise").mode, build_attack("noise").level) == ("std", 0.0)
    assert (build_attack("noise", noise_mode="snr").mode, build_attack("noise", noise_mode="snr").level) == ("snr", math.inf)
    assert repr(build_attack("fmn", norm="l2", bounds=(0, 1))) == repr(FMN(norm=2.0, bounds=(0.0, 1.0)))


def test_settings_are_passed_on():
    pgd = build_attack("pgd", norm="l2", eps=0.3, steps=5, step_size=0.1, random_start=False, loss="margin", seed=7)
    assert (pgd.eps, pgd.steps, pgd.step_size, pgd.random_start, pgd.loss, pgd.seed) == (0.3, 5, 0.1, False, "margin", 7)
    assert build_attack("deepfool", steps=3, overshoot=0.1).overshoot == 0.1
    assert build_attack("fmn", steps=7, bounds=(-1, 2)).bounds == (-1.0, 2.0)
    assert MIN_NORM_ATTACKS == ("fmn", "deepfool")


def test_errors():
    with pytest.raises(ValueError, match=r"The 'name' parameter of build_attack must be one of \[.*\]. Got 'cw' instead."):
        build_attack("cw")
    with pytest.raises(ValueError, match=r"The 'norm' parameter of build_attack must be one of .* Got 'l1' instead."):
        build_attack("fgsm", norm="l1")
    with pytest.raises(ValueError, match=r"The 'noise_mode' parameter of build_attack .* Got 'db' instead."):
        build_attack("noise", noise_mode="db")
    with pytest.raises(ValueError, match="'loss' parameter of FGSM"):
        build_attack("fgsm", loss="hinge")
