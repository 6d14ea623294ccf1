"""One colour per run in every chart: the PNGs of compare and data_efficiency, and .dvc/plots/*.json (Vega)."""

RUN_COLORS = {"transfer": "#1f77b4", "frozen": "#ff7f0e", "scratch": "#2ca02c", "adabn": "#d62728",
              "random_frozen": "#7f7f7f", "depth1": "#c5b0d5", "depth2": "#9467bd", "depth3": "#5b2d8e"}
