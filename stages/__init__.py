"""The DVC stages: one short script each (`python -m stages.<name>`), over the tlpipe package."""

import os

# TensorFlow's C++ start-up notices (oneDNN, CPU instructions) are INFO lines; its warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
