"""A generalization bound that shrinks with the contrastive batch size, with its checks.

Our reconstruction, not the BASIC paper's theorem (which we could not read): see theory/README.md.
"""
