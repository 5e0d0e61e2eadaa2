"""The lowest layer of the repository: statistics of results (`stats.py`), the verdicts drawn from them,
and the command-line error contract every command shares. numpy, scipy, pandas and the standard library
only (never JAX, never another folder of this repository), so that everything above it (theory, figures,
the trainer's tools, the sweeps) can import it downward and a figure redraws without loading the trainer.
"""
