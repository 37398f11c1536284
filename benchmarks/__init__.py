"""The project's benchmarks: speed, memory and accuracy against baselines.

``python -m benchmarks [--quick]`` runs them all (see :mod:`benchmarks.__main__`); each
script also runs on its own, ``python benchmarks/<script>.py [--quick]``.
"""
