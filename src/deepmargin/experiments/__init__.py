"""Studies assembled from the library: the demo and the paper's sweeps."""

from .demo import QUICK_SETTINGS, DemoResult, DemoSettings, demo_configs, run_demo

__all__ = ["QUICK_SETTINGS", "DemoResult", "DemoSettings", "demo_configs", "run_demo"]
