"""Resuming a workdir written before keys were added or renamed (basic_core/checkpoint.py check_config)."""

import json

import pytest

from basic_core import checkpoint
from basic_core.configs import get_config


def _older_record(config) -> dict:
  """The config.json a run of `config` wrote before loss.estimator and data.world existed."""
  record = checkpoint.config_json(config)
  del record["loss"]["estimator"], record["data"]["world"]
  record["data"]["name"] = "scenes"
  return record


def test_keys_added_at_their_default_and_the_renamed_world_do_not_block(tmp_path):
  config = get_config("tiny", [])
  (tmp_path / "config.json").write_text(json.dumps(_older_record(config)))
  assert checkpoint.check_config(tmp_path, config) == []


def test_a_real_difference_still_blocks(tmp_path):
  config = get_config("tiny", [])
  (tmp_path / "config.json").write_text(json.dumps(_older_record(config)))
  with pytest.raises(checkpoint.CheckpointError, match="data.world"):
    checkpoint.check_config(tmp_path, get_config("tiny", ["data.world=objects"]))
  with pytest.raises(checkpoint.CheckpointError, match="loss.estimator"):
    checkpoint.check_config(tmp_path, get_config("tiny", ["loss.estimator=queue"]))
