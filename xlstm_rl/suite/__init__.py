"""Benchmark suites: cores x environments x seeds, run as ordinary training runs, and a report.

``run_suite(path, out, workers)`` runs a suite file (``configs/suites/*.yaml``);
``build_report(out)`` rebuilds the report from the finished runs; ``merge_runs(into,
sources)`` gathers runs made into several output dirs into one. See docs/suite.md.
"""

from xlstm_rl.suite.merge import MergeOutcome, merge_runs
from xlstm_rl.suite.report import build_report
from xlstm_rl.suite.runner import SuiteOutcome, run_suite
from xlstm_rl.suite.spec import RunSpec, SuiteSpec, load_suite

__all__ = [
    "MergeOutcome",
    "RunSpec",
    "SuiteOutcome",
    "SuiteSpec",
    "build_report",
    "load_suite",
    "merge_runs",
    "run_suite",
]
