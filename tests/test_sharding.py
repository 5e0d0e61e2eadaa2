"""Model parallelism on 8 simulated CPU devices: rules, bytes per device, mesh-independent training,
global negatives, and clear errors for meshes and rules that cannot apply."""

import re

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from basic_core import losses, sharding
from basic_core import state as state_lib
from basic_core import step as step_lib
from basic_core.configs import get_config, microbatching
from basic_core.perf.timing import random_batch

# A few-second model with everything that meets the mesh: accumulation (K=2), remat, tiled loss.
SMALL = ["model.image.image_size=16", "model.image.vit.width=32", "model.image.vit.layers=1",
         "model.text.width=32", "model.text.layers=2", "model.text.context=8", "model.text.vocab_size=64",
         "model.embed_dim=16", "train.batch_size=16", "train.microbatch_size=8", "model.remat='full'",
         "loss.tile=4", "optim.warmup_steps=1", "data.augment=False"]
MESHES = [(1, 8, "tensor"), (2, 4, "tensor"), (4, 2, "fsdp"), (8, 1, "tensor")]  # one compile each
# What the tensor rules leave whole: norms, the biases added after a row-parallel matmul, the head.
REPLICATED = re.compile(r"(ln_\w+|ln_pre|ln_post|ln_final)/(scale|bias)$|(attn/out|mlp/proj)/bias$|"
                        r"^log_logit_scale$|^logit_bias$")


def _config(*overrides, base=()):
  return get_config("tiny", list(base) + list(overrides))


def _abstract(config):
  return state_lib.build(config, abstract=True).state


def _param_bytes(state, rules, data, model):
  mesh_shape = dict(data=data, model=model)
  specs, placement = sharding.state_specs(state, rules, mesh_shape)
  return sharding.bytes_per_device(state["params"], specs["params"], mesh_shape), specs, placement


# ---- mesh -------------------------------------------------------------------------------------------


def test_mesh_fills_the_rest_and_rejects_what_does_not_divide():
  mesh_config = lambda d, m: _config(f"mesh.data={d}", f"mesh.model={m}").mesh
  assert sharding.mesh_shape(mesh_config(-1, 2), 8) == (4, 2)
  assert sharding.mesh_shape(mesh_config(2, -1), 8) == (2, 4)
  with pytest.raises(sharding.ShardingError, match="data=3 x model=1 does not divide the 8 devices"):
    sharding.mesh_shape(mesh_config(3, 1), 8)
  mesh = sharding.make_mesh(mesh_config(4, 2))
  assert dict(mesh.shape) == dict(data=4, model=2)
  with pytest.raises(sharding.ShardingError, match=r"train.microbatch_size=6 .* data axis \(4\)"):
    sharding.check_batch(mesh, 16, 6)


# ---- rules ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [2, 4, 8])
def test_tensor_rules_put_total_over_m_on_each_device(model):
  """Per-device parameter bytes = replicated + (total - replicated) / M; the replicated are small."""
  state = _abstract(_config())
  total, _, _ = _param_bytes(state, sharding.REPLICATE_RULES, 1, 1)
  per_device, specs, placement = _param_bytes(state, sharding.TENSOR_RULES, 8 // model, model)
  shapes = sharding.param_shapes(state["params"])
  replicated = 4 * sum(np.prod(shapes[n]) for n in placement.replicated())
  assert per_device == replicated + (total - replicated) / model
  assert all(REPLICATED.search(n) for n in placement.replicated()), placement.replicated()
  assert replicated < 0.01 * total
  assert not placement.fallbacks
  # Adam's moments are laid out like their parameters; the step counters are replicated.
  for path, spec in jax.tree_util.tree_flatten_with_path(
      specs["opt_state"], is_leaf=lambda x: isinstance(x, P))[0]:
    name = sharding.path_name(path)
    moment = re.fullmatch(r".*/(mu|nu)/(.*)", name)
    assert spec == (placement.specs[moment.group(2)] if moment else P()), name


def test_stacked_layers_get_a_leading_none_and_the_same_split():
  stacked, _, placement = _param_bytes(_abstract(_config()), sharding.TENSOR_RULES, 2, 4)
  looped, _, looped_placement = _param_bytes(_abstract(_config("model.scan_layers=False")),
                                             sharding.TENSOR_RULES, 2, 4)
  assert stacked == looped
  assert placement.specs["text/transformer/blocks/attn/qkv/kernel"] == P(None, None, "model")
  assert looped_placement.specs["text/transformer/blocks/1/attn/qkv/kernel"] == P(None, "model")
  assert placement.specs["text/transformer/blocks/mlp/proj/kernel"] == P(None, "model", None)


def test_fsdp_rules_split_every_tensor_over_all_devices():
  state = _abstract(_config())
  total, _, _ = _param_bytes(state, sharding.REPLICATE_RULES, 1, 1)
  per_device, _, placement = _param_bytes(state, sharding.FSDP_RULES, 2, 4)
  assert placement.replicated() == ["log_logit_scale", "logit_bias"]
  assert per_device == (total - 8) / 8 + 8


def test_adafactor_state_mirrors_unfactored_moments_and_replicates_factored_ones():
  config = _config("optim.name='adafactorw'", "train.freeze_image='first_k'",
                   "train.freeze_image_steps=5", "model.text.width=128")
  specs, _ = sharding.state_specs(_abstract(config), sharding.TENSOR_RULES, dict(data=2, model=4))
  opt = {sharding.path_name(p).split("inner_state/")[-1]: s for p, s in
         jax.tree_util.tree_flatten_with_path(specs["opt_state"], is_leaf=lambda x: isinstance(x, P))[0]}
  assert opt["0/v/text/transformer/blocks/mlp/fc/bias"] == P(None, "model")  # unfactored: full v
  assert opt["0/v_row/text/transformer/blocks/mlp/fc/kernel"] == P()  # factored: O(rows + cols)
  assert opt["0/v_col/text/transformer/blocks/mlp/fc/kernel"] == P()


def test_an_indivisible_split_falls_back_to_replication_and_says_so():
  state = _abstract(_config())
  _, _, placement = _param_bytes(state, sharding.TENSOR_RULES, 1, 3)
  assert ("text/transformer/blocks/mlp/fc/kernel dim 2 (size 256) not divisible by model=3: "
          "replicated") in placement.fallbacks
  assert placement.specs["text/transformer/blocks/mlp/fc/kernel"] == P(None, None, None)
  assert placement.specs["text/transformer/blocks/attn/qkv/kernel"] == P(None, None, "model")  # 192
  mesh = sharding.make_mesh(_config("mesh.data=1", "mesh.model=3").mesh, jax.devices()[:3])
  with pytest.warns(UserWarning, match="fell back to replication: .*mlp/fc/kernel"):
    sharding.state_shardings(state, mesh, sharding.TENSOR_RULES)


def test_rules_that_match_nothing_or_leave_parameters_out_are_errors():
  shapes = sharding.param_shapes(_abstract(_config())["params"])
  mesh_shape = dict(data=2, model=4)
  with pytest.raises(sharding.ShardingError, match=r"rules that match no parameter: 'attn/qvk/kernel'"):
    sharding.resolve(shapes, [("attn/qvk/kernel", P(None, "model")), (".*", P())], mesh_shape)
  with pytest.raises(sharding.ShardingError,
                     match=r"parameters matched by no rule: image/cls_token, image/ln_post/bias"):
    sharding.resolve(shapes, [("qkv/kernel$", P(None, "model"))], mesh_shape)
  with pytest.raises(sharding.ShardingError, match=r"names mesh axes \['modle'\]"):
    sharding.resolve(shapes, [(".*", P("modle"))], mesh_shape)
  with pytest.raises(sharding.ShardingError, match="unknown mesh.rules 'tensr'"):
    sharding.config_rules(_config("mesh.rules='tensr'").mesh)


def test_extra_rules_from_the_config_come_first_and_must_match():
  config = _config("mesh.extra_rules=(('token_embed/embedding$', ('model', None)), ('qkv/kernel$', 'row'))")
  _, _, placement = _param_bytes(_abstract(config), sharding.config_rules(config.mesh), 2, 4)
  assert placement.specs["text/token_embed/embedding"] == P("model", None)  # vocabulary split
  assert placement.specs["image/transformer/blocks/attn/qkv/kernel"] == P(None, "model", None)
  typo = _config("mesh.extra_rules=(('token_embed/embeding$', ('model', None)),)")
  with pytest.raises(sharding.ShardingError, match="token_embed/embeding"):
    _param_bytes(_abstract(typo), sharding.config_rules(typo.mesh), 2, 4)


# ---- training on meshes -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def initial():
  """(config, fns, initial state as NumPy): built once (seconds), placed afresh on every mesh."""
  config = _config(base=SMALL)
  built = state_lib.build(config)
  return config, built.fns, jax.device_get(built.state)


def _train(initial, data, model, rules="tensor", steps=3, extra=()):
  """Losses, final parameters (NumPy) and the bytes of parameters on device 0 after `steps` steps."""
  config = _config(f"mesh.data={data}", f"mesh.model={model}", f"mesh.rules={rules!r}", *extra, base=SMALL)
  mesh = sharding.make_mesh(config.mesh, jax.devices()[: data * model])
  placed = state_lib.build(config, abstract=True, mesh=mesh)  # the trainer's placement, nothing allocated
  state = jax.device_put(initial[2], placed.sharding)
  batch_sharding = sharding.batch_sharding(mesh)
  batches = [sharding.put_batch(random_batch(config, config.train.batch_size, seed=i), batch_sharding)
             for i in range(steps)]
  step = step_lib.make_train_step(placed.fns, placed.tx, config.loss, seed=config.seed,
                                  microbatches=microbatching(config.train)[1])
  step = step_lib.jit_train_step(step, placed.sharding, batch_sharding, xla=config.xla)
  step = step.lower(state, batches[0]).compile()
  step_losses = []
  for batch in batches:
    state, metrics = step(state, batch)
    step_losses.append(float(metrics["loss"]))
  device_bytes = sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(state["params"]))
  return np.array(step_losses), sharding.to_host(state["params"]), device_bytes


@pytest.fixture(scope="module")
def train_on(initial):
  """`_train` on a (data, model, rules) mesh, each run once per module."""
  runs = {}

  def run(data, model, rules="tensor"):
    if (data, model, rules) not in runs:
      runs[data, model, rules] = _train(initial, data, model, rules)
    return runs[data, model, rules]

  return run


def _relative(a, b) -> float:
  flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])
  return float(np.linalg.norm(flat(a) - flat(b)) / np.linalg.norm(flat(b)))


@pytest.mark.parametrize("data,model,rules", MESHES)
def test_every_mesh_trains_like_one_device(initial, train_on, data, model, rules):
  """3 accumulated steps (remat, tiled loss): same losses and parameters up to float32 reduction order,
  with each device holding the bytes the rules promise."""
  ref_losses, ref_params, _ = train_on(1, 1)
  run_losses, params, device_bytes = train_on(data, model, rules)
  np.testing.assert_allclose(run_losses, ref_losses, rtol=1e-5)
  assert _relative(params, ref_params) <= 1e-5
  expected, _, _ = _param_bytes(_abstract(initial[0]), sharding.RULE_SETS[rules], data, model)
  assert device_bytes == expected


def test_the_loss_sees_global_negatives(initial, train_on):
  """The first step's loss on 8 devices is the whole batch's, not the mean of the devices' own losses."""
  config, fns, state = initial
  head_loss = fns.head_loss(losses.make_loss_fn(_config("loss.tile=0").loss))
  shards = jax.tree.map(lambda x: x.reshape(8, -1, *x.shape[1:]), random_batch(config, 16, seed=0))
  per_device = jax.jit(jax.vmap(lambda b, p: head_loss(*fns.embed(p, b, None), p), in_axes=(0, None)))(
      shards, state["params"])
  whole = train_on(1, 1)[0][0]
  assert train_on(8, 1)[0][0] == pytest.approx(whole, rel=1e-5)
  assert abs(whole - float(per_device.mean())) > 0.5  # 2 examples per device: log 2 vs log 16 scale


def test_grouped_negatives_train_alike_on_one_and_eight_devices(initial, train_on):
  """loss.group_size=4 (3 negatives per positive) with accumulation and the tiled loss: the groups are
  the same consecutive pairs whatever the mesh, and differ from the whole-batch loss."""
  one = _train(initial, 1, 1, extra=("loss.group_size=4",))
  eight = _train(initial, 8, 1, extra=("loss.group_size=4",))
  np.testing.assert_allclose(eight[0], one[0], rtol=1e-5)
  assert _relative(eight[1], one[1]) <= 1e-5
  assert abs(one[0][0] - train_on(1, 1)[0][0]) > 0.5  # log 4 vs log 16 scale
