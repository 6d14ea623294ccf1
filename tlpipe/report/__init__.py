"""Reports for people: the comparison (compare.json, curves, confusion data) and every figure.

No training stage imports it, so a change to a chart re-runs only the stages that draw it.
"""
