"""Tables and plots made from result files (matplotlib object API; every plot returns its Figure)."""

from .boundary import decision_grid, load_boundary_data, plot_decision_boundaries, save_boundary_data
from .plots import plot_accuracy_grid, plot_training_curves
from .tables import accuracy_table, format_table, pivot_rows

__all__ = [
    "accuracy_table",
    "decision_grid",
    "format_table",
    "load_boundary_data",
    "pivot_rows",
    "plot_accuracy_grid",
    "plot_decision_boundaries",
    "plot_training_curves",
    "save_boundary_data",
]
