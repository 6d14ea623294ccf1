"""The DVC stages: one short script each (`python -m stages.<name>`), over the tlpipe package."""

import os

from tlpipe.core.cli import die_with_dvc

# TensorFlow's C++ start-up notices (oneDNN, CPU instructions) are INFO lines; its warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
die_with_dvc()  # before a stage imports TensorFlow: a dvc killed meanwhile takes the stage with it
