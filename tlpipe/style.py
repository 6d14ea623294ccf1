"""One colour per run in every chart: the PNGs of compare and data_efficiency, and .dvc/plots/*.json (Vega)."""

RUN_COLORS = {"transfer": "#1f77b4", "frozen": "#ff7f0e", "scratch": "#2ca02c"}
