"""Transfer learning (Fashion-MNIST to MNIST by default, or to your own images): the logic behind the DVC stages.

core/ is the training path, apps/ prepare and predict, lab/ the sweep and the study.
"""
