"""mlattack.report: the study's tables and figures across attack runs (``mlattack report``)."""

from mlattack.report.build import REPORT_EXPERIMENT, Report, build_report
from mlattack.report.collect import AttackRun, collect_runs
from mlattack.report.labels import LabelAnalysis, analyse_labels
from mlattack.report.sweeps import BudgetCurve, budget_curves

__all__ = [
    "REPORT_EXPERIMENT",
    "AttackRun",
    "BudgetCurve",
    "LabelAnalysis",
    "Report",
    "analyse_labels",
    "budget_curves",
    "build_report",
    "collect_runs",
]
