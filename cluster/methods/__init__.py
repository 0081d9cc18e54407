"""The built-in spatial-domain methods, one settings class each (see :mod:`cluster.registry`).

These modules are light: a method's model code (torch, torch-geometric, scikit-learn) is imported by
its behaviour methods when they run, so reading a config or listing the methods stays cheap.
"""
