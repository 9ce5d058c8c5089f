"""IFGSM against AutoAttack in the studies' report: suspected masking, verdicts and winners from the worst case,
whether each of the paper's claims holds; the mnist-5k protocol's cached denominators and AutoAttack settings."""

from __future__ import annotations

import json

import pytest

from deepmargin.experiments import ROW_COLUMNS, StudyOptions
from deepmargin.experiments.protocol import PROTOCOLS, Protocol
from deepmargin.experiments.worst_case import MASKING_POINTS, run_autoattack
from deepmargin.reports.compare import compare_section
from deepmargin.reports.study import _Doc, _direction, _verdict
from deepmargin.reports.worst_case import paired_attack_rows, suspected_masking, worst_case_section


def _row(**fields):
    base = {c: None for c in ROW_COLUMNS}
    base.update(study="adversarial", dataset="digits", label_noise=0.0, train_fraction=1.0, box="white", hp="-", run="r")
    base.update(fields)
    return base


def _adversarial_rows(masked_gap: float):
    """ce, margin-linf (IFGSM above AutoAttack by ``masked_gap`` points), margin-l2 (no gap), 3 seeds, eps 0.1."""
    rows = []
    for seed in range(3):
        for loss, ifgsm, aa in (("ce", 0.60, 0.58), ("margin-linf", 0.70 + 0.01 * seed, 0.70 + 0.01 * seed - masked_gap / 100),
                                ("margin-l2", 0.64 + 0.01 * seed, 0.63 + 0.01 * seed)):
            rows.append(_row(loss=loss, seed=seed, attack="ifgsm", eps=0.1, test_acc=ifgsm))
            rows.append(_row(loss=loss, seed=seed, attack="autoattack", eps=0.1, test_acc=aa, flags="black_box" if loss == "ce" else ""))
            rows.append(_row(loss=loss, seed=seed, attack="ifgsm", eps=0.2, test_acc=ifgsm / 2))  # no AutoAttack there
    return rows


def test_suspected_masking_is_the_gap_above_five_points_per_model_and_seed():
    rows = _adversarial_rows(masked_gap=20.0)
    pairs = paired_attack_rows(rows)
    assert len(pairs) == 9 and {p["eps"] for p in pairs} == {0.1}  # eps 0.2 has no AutoAttack row: not paired
    masked = suspected_masking(rows)
    assert {(e["loss"], e["seed"]) for e in masked} == {("margin-linf", s) for s in range(3)}
    assert all(e["gap"] == pytest.approx(20.0) for e in masked)
    assert suspected_masking(_adversarial_rows(masked_gap=MASKING_POINTS)) == []  # exactly 5 points: not above


def test_the_section_says_which_advantage_survives_the_worst_case():
    doc = _Doc()
    assert worst_case_section(doc, _adversarial_rows(masked_gap=20.0), ["ce", "margin-linf", "margin-l2"], verdict=_verdict)
    text = doc.markdown()
    assert "**margin-linf**, seed 0, eps 0.1: IFGSM 70.0%, AutoAttack 50.0% (+20.0 points)" in text
    assert "| margin-linf | 0.1 | 3 | 71.0 ± 1.0 | 51.0 ± 1.0 | +20.0 | – | 3/3 seeds |" in text
    assert "| ce | 0.1 | 3 | 60.0 ± 0.0 | 58.0 ± 0.0 | +2.0 | black_box | 0/3 seeds |" in text
    under_ifgsm, under_aa = text.split("Under AutoAttack")
    assert "**margin-linf** beat ce" in under_ifgsm and "**margin-linf** did not beat ce" in under_aa
    assert "**margin-l2** beat ce" in under_aa
    assert not worst_case_section(_Doc(), [r for r in _adversarial_rows(20.0) if r["attack"] != "autoattack"], ["ce"])


def test_compare_methods_names_robustness_winners_from_autoattack_not_ifgsm():
    rows = []
    for seed in range(3):
        for loss, ifgsm, aa in (("ce", 0.60, 0.55), ("vat", 0.90, 0.40), ("margin-l2", 0.70, 0.65)):
            common = dict(study="compare-methods", loss=loss, seed=seed, eps=0.1, metric="accuracy")
            rows.append(_row(**common, attack="ifgsm", test_acc=ifgsm, value=ifgsm))
            rows.append(_row(**common, attack="autoattack", test_acc=aa, value=aa, flags=""))
    doc = _Doc()
    compare_section(doc, rows, "/tmp/unused-figures", dataset="digits", losses=["ce", "vat", "margin-l2"], settings={"eps_linf": 0.1})
    text = doc.markdown()
    winners = text.split("Which method wins each column")[1].split("Further measurements")[0]
    assert "**AutoAttack @ eps=0.1 (%)**" in winners and "**margin-l2** wins" in winners
    assert "**IFGSM" not in winners  # vat tops IFGSM by masking; it names no winner
    assert "**vat**, seed 0, eps 0.1: IFGSM 90.0%, AutoAttack 40.0% (+50.0 points)" in text


@pytest.mark.parametrize("margin,expected", [(0.05, "yes"), (-0.05, "no")])
def test_direction_of_a_paper_claim(margin, expected):
    numbers = [("noisy-labels", "ce", "label_noise=0.8", "accuracy", 93.9, "x"),
               ("noisy-labels", "margin-l2", "label_noise=0.8", "accuracy", 96.4, "x")]
    rows = [_row(study="noisy-labels", loss=loss, seed=s, label_noise=0.8, attack="none", box="none",
                 test_acc=0.5 + (margin + 0.01 * s if loss == "margin-l2" else 0.0))
            for s in range(3) for loss in ("ce", "margin-l2")]
    assert _direction(rows, numbers[1], numbers) == expected
    assert _direction(rows, numbers[0], numbers) == "–"  # ce is the reference, not a claim
    few = [r for r in rows if r["seed"] == 0]
    assert _direction(few, numbers[1], numbers) == expected + "; 1 seed: not evidence"


def test_mnist5k_margin_presets_cache_their_denominators_where_they_can():
    from deepmargin.experiments import build_plan

    plan = build_plan(StudyOptions(studies=("adversarial",), dataset="mnist-5k", seeds=(0,)))
    trains = [c.config for c in plan.cells.values() if c.kind == "train"]
    refresh = {(c["loss"], c["adv_train"]): c["denominator_refresh"] for c in trains}
    assert refresh[("margin", "none")] == 5  # the protocol's cache
    assert refresh[("margin", "fgsm")] == 0  # adversarial training cannot use it
    assert refresh[("ce", "none")] == 0 and refresh[("ce", "fgsm")] == 0
    evals = [c.config for c in plan.cells.values() if c.kind == "eval"]
    assert {(e["autoattack"], e["autoattack_eps"], e["attack_n"]) for e in evals} == {("fast", 0.1, 300)}
    custom = build_plan(StudyOptions(studies=("adversarial",), dataset="digits", seeds=(0,), autoattack="none", attack_n=7))
    assert {(c.config["autoattack"], c.config["attack_n"]) for c in custom.cells.values() if c.kind == "eval"} == {("none", 7)}


def test_autoattack_option_is_checked():
    with pytest.raises(ValueError, match="'autoattack' parameter of StudyOptions must be one of"):
        StudyOptions(autoattack="strong")
    with pytest.raises(ValueError, match="'autoattack_eps' parameter of StudyOptions must be a finite float > 0"):
        StudyOptions(autoattack_eps=0.0)


def test_a_protocol_written_before_autoattack_ran_none():
    old = {k: v for k, v in PROTOCOLS["digits"].to_dict().items() if k not in ("autoattack", "autoattack_eps", "attack_n", "train_overrides")}
    restored = Protocol.from_dict(json.loads(json.dumps(old)))
    assert restored.autoattack == "none" and restored.eps == PROTOCOLS["digits"].eps
    assert Protocol.from_dict(PROTOCOLS["mnist-5k"].to_dict()) == PROTOCOLS["mnist-5k"]


def test_run_autoattack_is_skipped_without_a_version_or_a_box():
    import torch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    x, y = torch.rand(5, 4), torch.zeros(5, dtype=torch.long)
    assert run_autoattack(model, x, y, version="none", eps=0.1, bounds=(0, 1), seed=0) is None
    assert run_autoattack(model, x, y, version="fast", eps=0.1, bounds=(float("-inf"), float("inf")), seed=0) is None


def test_run_autoattack_flags_a_model_whose_accuracy_never_falls_to_zero():
    import torch

    class Constant(torch.nn.Module):  # predicts class 0 whatever the input: no radius can break it
        def forward(self, x):
            return torch.tensor([[1.0, 0.0, 0.0]]).expand(len(x), 3) + 0 * x.flatten(1)[:, :3]

    x, y = torch.rand(4, 1, 2, 2), torch.zeros(4, dtype=torch.long)
    result, flags = run_autoattack(Constant().eval(), x, y, version="fast", eps=0.1, bounds=(0, 1), seed=0)
    assert result.robust_accuracy == 1.0 and "large_eps" in flags.split(";")


def test_a_study_resumed_from_before_the_protocol_held_attack_n_keeps_the_options_value():
    from deepmargin.experiments import build_plan

    options = StudyOptions(studies=("adversarial",), dataset="digits", seeds=(0,), attack_n=50, losses=("ce",))
    plan = build_plan(options)
    saved = json.loads(json.dumps(plan.describe()))
    for key in ("attack_n", "autoattack", "autoattack_eps", "train_overrides"):
        saved["protocol"].pop(key)
    again = build_plan(options, saved=saved)
    assert {c.config["attack_n"] for c in again.cells.values() if c.kind == "eval"} == {50}


def test_the_report_setup_says_where_denominators_were_cached_and_which_autoattack_ran():
    from deepmargin.reports.study import _protocol_notes

    notes = _protocol_notes(PROTOCOLS["mnist-5k"].to_dict())
    assert notes[0].startswith("training overrides for the `margin` presets: denominator_refresh=5 (")
    assert notes[1].startswith("AutoAttack `fast` (l_inf, eps 0.1) beside IFGSM on the attacked test inputs (300)")
    assert _protocol_notes({**PROTOCOLS["digits"].to_dict(), "autoattack": "none"}) == []


def test_mnist5k_limited_data_runs_scale_the_learning_rate_decay_to_their_epochs():
    from deepmargin.experiments import build_plan

    def decays(dataset):
        plan = build_plan(StudyOptions(studies=("limited-data",), dataset=dataset, seeds=(0,), losses=("ce",)))
        return {c.config["train_fraction"]: (c.config["epochs"], c.config["lr_decay"]) for c in plan.cells.values()}

    got = decays("mnist-5k")
    assert got[1.0] == (10, 0.95)
    for fraction in (0.2, 0.05, 0.02125):  # the decay over the whole run equals the full-data run's 0.95 ** 10
        epochs, decay = got[fraction]
        assert decay ** epochs == pytest.approx(0.95 ** 10)
    assert {d for _e, d in decays("digits").values()} == {PROTOCOLS["digits"].lr_decay}  # digits unchanged
