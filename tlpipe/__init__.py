"""Transfer learning from Fashion-MNIST to MNIST: the shared logic behind the DVC stages."""
