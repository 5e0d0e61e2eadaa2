"""Data for basic-jax: the built-in scenes benchmark, sklearn digits, WebDataset / CSV / image-folder
readers, the tokenizer, and a resumable, process-sharded training pipeline.

`python -m basic_core.data export|bench|train-tokenizer --help` for the commands.
"""

from basic_core.data.pipeline import Pipeline, train_pipeline
from basic_core.data.suite import EvalSuite, eval_suite, trained_pairs
from basic_core.data.tasks import ZeroShotTask
from basic_core.data.tokenizer import Tokenizer, get_tokenizer, tokenizer_from_json

__all__ = ["EvalSuite", "Pipeline", "Tokenizer", "ZeroShotTask", "eval_suite", "get_tokenizer",
           "tokenizer_from_json", "train_pipeline", "trained_pairs"]
