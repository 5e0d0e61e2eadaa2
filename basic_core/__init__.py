"""basic-jax: BASIC (Pham et al., arXiv 2111.10050) contrastive image-text training in JAX / Flax NNX."""
