"""Applications of the trained models: a folder of your own images as the target (prepare), and predict."""
