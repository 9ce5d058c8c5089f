"""``deepmargin report DIR``: merge a study's shards into rows.csv / rows.jsonl, redraw the plots, write the report."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "merge a study's shards into DIR/rows.csv and rows.jsonl, redraw its plots and write DIR/report.md and report.html"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``report`` subcommand."""
    p = subparsers.add_parser("report", help=HELP, description=HELP + ". Reads only result files; trains nothing.")
    p.add_argument("dir", type=Path, metavar="DIR", help="a `deepmargin experiment --out` folder")
    return p


def run(args: argparse.Namespace) -> int:
    """Merge and report; print the files."""
    from ..experiments.engine import merge_and_report
    from ..reports.study import write_report

    files = merge_and_report(args.dir, report=write_report)
    for role in ("rows", "rows_jsonl", "report", "html"):
        print(f"wrote {files[role]}")
    if files["missing"]:
        print(f"{files['missing']} cells are not finished: run the study command again (or wait for its shards)")
    return 0
