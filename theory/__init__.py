"""What the contrastive batch size N does to the objective (a bias kappa / N), and bounds on the
generalization gap whose N-dependence is bias or proof artifact, not shown overfitting; with checks.

Our own work, not the BASIC paper's theorem (which we could not read): see theory/README.md.
"""
