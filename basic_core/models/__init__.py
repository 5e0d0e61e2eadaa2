"""Image and text towers and the two-tower model (ViT, CoAtNet, causal Transformer; see two_tower.py).

Pure: nothing here knows about data, meshes or training.
"""

from basic_core.models.two_tower import TwoTower, build_model, count_params

__all__ = ["TwoTower", "build_model", "count_params"]
