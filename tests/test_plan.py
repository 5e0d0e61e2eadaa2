"""The scale plan: BASIC-L on paper, bad meshes, and the activation formula against XLA's compiled memory."""

import json

import jax
import pytest

from basic_core import plan, sharding
from basic_core.configs import get_config
from basic_core.perf import compiled, scale_plan

FAST_COMPILE = dict(xla_backend_optimization_level=0, xla_llvm_disable_expensive_passes=True,
                    xla_cpu_use_fusion_emitters=False)
GIB = 2**30


def _run(capsys, *argv):
  code = plan.main(list(argv))
  out = capsys.readouterr()
  return code, out.out, out.err


def test_basic_l_at_65536_fits_32_gib_on_a_64x8_mesh(capsys):
  code, out, _ = _run(capsys, "--config", "basic-l", "--mesh", "data=64,model=8", "--batch", "65536",
                      "--microbatch", "128", "--json")
  assert code == 0
  result = json.loads(out.strip().splitlines()[-1])
  assert 2.9e9 < result["params"] < 3.3e9  # "about 3B weights" (BASIC's abstract)
  b = result["breakdown"]
  # Tensor rules: all but ~0.03% of the parameters are split 8 ways.
  assert result["param_bytes"] / 8 <= b["params"] < 1.01 * result["param_bytes"] / 8
  assert result["replicated_params"] < 0.001 * result["params"]
  assert b["gradients"] == 2 * b["params"] and b["optimizer"] < 0.01 * b["params"]
  assert b["embeddings"] == 2 * 65536 * 1024 * 4 * 2 / 64 + 2 * 65536 * 1024 * 4
  assert b["loss"] == 3 * 65536 * 4096 * 4 / 64
  assert result["fits"] and result["bytes_per_device"] < 32 * GIB
  assert result["bytes_per_device"] == sum(b.values()) - min(b["loss"], b["activations"])


def test_text_table_and_a_budget_that_is_too_small(capsys):
  code, out, _ = _run(capsys, "--config", "tiny", "--mesh", "data=2,model=4", "--memory", "1MiB")
  assert code == 0
  assert "does NOT fit in 0.0 GiB" in out and "params" in out and "activations" in out


@pytest.mark.parametrize("mesh,message", [
    ("data=3,model=1", "batch 64 is not divisible by mesh data=3"),
    ("data=2", "expected data=D,model=M"),
    ("data=0,model=8", "positive sizes"),
])
def test_bad_meshes_are_one_line_errors(capsys, mesh, message):
  code, _, err = _run(capsys, "--config", "tiny", "--mesh", mesh)
  assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def _compiled_temp(config, data: int, model: int) -> int:
  """XLA's temp bytes per device of the jitted train step on a data x model mesh of this machine."""
  mesh = sharding.make_mesh(config.mesh, jax.devices()[: data * model])
  return compiled.compiled_memory(compiled.lower_step(config, mesh).compile(FAST_COMPILE))["temp_bytes"]


@pytest.mark.parametrize("overrides,data,model", [
    (["model.remat='full'", "model.image.vit.layers=4", "model.text.layers=4"], 2, 4),
    (["model.remat='none'", "model.image.kind='coatnet'", "train.batch_size=32",
      "train.microbatch_size=8"], 1, 1),
])
def test_the_estimate_is_within_a_factor_of_two_of_compiled_memory(overrides, data, model):
  config = get_config("tiny", ["train.batch_size=128", "train.microbatch_size=32", "data.augment=False",
                              f"mesh.data={data}", f"mesh.model={model}"] + overrides)
  b = scale_plan.plan(config, data, model)["breakdown"]
  estimate = b["gradients"] + b["embeddings"] + max(b["loss"], b["activations"])
  assert 0.5 < estimate / _compiled_temp(config, data, model) < 2
