"""Studies assembled from the library: the demo, the paper's studies (noisy labels, limited data, adversarial)
and ``compare-methods`` (every margin method side by side).

The runner (:mod:`.engine`) is generic; what each kind of cell trains or measures is registered in
:mod:`.cells`. The report is written by the caller (``deepmargin experiment`` passes
:func:`deepmargin.reports.study.write_report` as ``report``).

Example:
    >>> from deepmargin.experiments import StudyOptions, run_study
    >>> result = run_study(StudyOptions(studies=("noisy-labels",), seeds=(0,)), "runs/noisy")  # doctest: +SKIP
"""

from .compare import COMPARE_METHODS, compare_defaults, compare_grid
from .demo import QUICK_SETTINGS, DemoResult, DemoSettings, demo_configs, run_demo
from .engine import StudyResult, assign_shards, collect_rows, parse_shard, run_study, usable_cpus
from .presets import ADVERSARIAL_LOSSES, PAPER_LOSSES, PRESETS, Preset, load_preset_file
from .protocol import GRIDS, PROTOCOLS, Protocol, protocol_for, resolve_grid
from .studies import ALL_STUDIES, DEFAULT_LOSSES, ROW_COLUMNS, STUDIES, Cell, Plan, StudyOptions, build_plan, select_runs, study_rows

__all__ = [
    "ADVERSARIAL_LOSSES",
    "ALL_STUDIES",
    "COMPARE_METHODS",
    "DEFAULT_LOSSES",
    "GRIDS",
    "PAPER_LOSSES",
    "PRESETS",
    "PROTOCOLS",
    "QUICK_SETTINGS",
    "ROW_COLUMNS",
    "STUDIES",
    "Cell",
    "DemoResult",
    "DemoSettings",
    "Plan",
    "Preset",
    "Protocol",
    "StudyOptions",
    "StudyResult",
    "assign_shards",
    "build_plan",
    "collect_rows",
    "compare_defaults",
    "compare_grid",
    "demo_configs",
    "load_preset_file",
    "parse_shard",
    "protocol_for",
    "resolve_grid",
    "run_demo",
    "run_study",
    "select_runs",
    "study_rows",
    "usable_cpus",
]
