"""Transfer learning (Fashion-MNIST to MNIST by default, or to your own images): the logic behind the DVC stages."""

from tlpipe._quiet import quiet_tensorflow_startup

# TensorFlow prints start-up notices (oneDNN, "rebuild TensorFlow with the appropriate compiler flags") on
# stderr in every process; the first import of tensorflow through this package drops those lines only.
quiet_tensorflow_startup()
