"""Towers and the two-tower model: shapes, parameter counts, keys, layouts, remat, dtype, temperature.

Models are small overrides of the `tiny` preset. Compiling dominates the run time, so:
- variants that keep the parameter layout (remat policy, dropout, dtype, norm kind) reuse one model's
  weights under another config's graph (`variant`);
- gradients of models that are compared are taken in one program (`losses_and_grads`);
- programs compile with the suite's fast-compile flags (tests/conftest.py);
- the CoAtNet tests draw random weights with NumPy (`numpy_weights`) instead of compiling its init;
  the initialisers themselves are exercised by the ViT model and, for shapes, by `count_params`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from basic_core.configs import PRESETS, get_config
from basic_core.models import TwoTower, build_model, count_params
from basic_core.models.layers import REMAT_POLICIES, constrain
from basic_core.models.text import end_positions

COATNET = {  # a Stack in every stage; T stages on 4x4 and 2x2 maps, one of them widening at stride 1
    "image.kind": "coatnet", "image.coatnet.stem": 16, "image.coatnet.blocks": (2, 2, 2, 2),
    "image.coatnet.widths": (16, 32, 32, 64), "image.coatnet.head_dim": 16}
SMALL_VIT = {"image.vit.patch": 8}  # 16 patches whatever `tiny` uses: these tests compare functions
B, L = 4, 24
jit_per_graph = functools.partial(jax.jit, static_argnums=0)  # one program per model graph (static)


def model_config(values=()):
  """`tiny`'s model config with SMALL_VIT and `{"dotted.key": value}` set (values kept as given)."""
  config = get_config("tiny").model
  for dotted, value in {**SMALL_VIT, **dict(values)}.items():
    *parents, leaf = dotted.split(".")
    node = config
    for part in parents:
      node = node[part]
    assert leaf in node, dotted
    node[leaf] = value
  return config


def abstract(values=(), xla=None):
  config = model_config(values)
  return nnx.eval_shape(lambda: TwoTower(config, xla, rngs=nnx.Rngs(0)))


def build(values=()):
  """`build_model(config, seed=0)` compiled (equal up to float rounding; see the layout test)."""
  config = model_config(values)
  init = jax.jit(lambda: nnx.state(TwoTower(config, rngs=nnx.Rngs(0))))
  return nnx.merge(nnx.graphdef(abstract(values)), init())


def numpy_weights(values, seed=0):
  """A model of config `values` with NumPy-drawn weights: fan-in scaled, norm scales near 1."""
  graphdef, state = nnx.split(abstract(values))
  rng = np.random.default_rng(seed)

  def draw(path, var):
    shape = var.shape
    if path[-1] == "scale":
      return 1 + 0.1 * rng.standard_normal(shape, np.float32)
    fan_in = shape[-2] if len(shape) >= 2 else 50
    return rng.standard_normal(shape, np.float32) / np.sqrt(fan_in)

  flat = [(path, var.replace(draw(path, var))) for path, var in nnx.to_flat_state(state)]
  return nnx.merge(graphdef, nnx.from_flat_state(flat))


def variant(model, values, xla=None):
  """`model`'s weights under the graph of config `values` (which must keep the parameter layout)."""
  return nnx.merge(nnx.graphdef(abstract(values, xla)), nnx.state(model))


def flat(state):
  return {path: var.get_value() for path, var in nnx.to_flat_state(state)}


def unstacked(scan_flat, loop_paths):
  """Scan-layout {path: array} in the loop layout: `.../blocks/<i>/...` <- `.../blocks/...`[i]."""
  out = {}
  for path in loop_paths:
    i = path.index("blocks") + 1 if "blocks" in path else None
    out[path] = scan_flat[path] if i is None else scan_flat[path[:i] + path[i + 1:]][path[i]]
  return out


@jit_per_graph
def _embed(graphdef, state, images, tokens, key):
  m = nnx.merge(graphdef, state)
  key_image, key_text = (None, None) if key is None else (jax.random.fold_in(key, 0),
                                                          jax.random.fold_in(key, 1))
  return (m.encode_image(images, key=key_image), m.encode_text(tokens, key=key_text),
          m.image(images, key=key_image), m.text(tokens, key=key_text))


def embed(model, images, tokens, key=None):
  """(image embedding, text embedding, image features, text features), compiled once per graph."""
  return _embed(*nnx.split(model), images, tokens, key)


@jit_per_graph
def _losses_and_grads(graphdefs, params, rests, images, tokens, key):

  def loss(params, graphdef, rest):
    m = nnx.merge(graphdef, params, rest)
    img_BxD, txt_BxD = m(images, tokens, key=key)
    logits_BxB = m.logit_scale() * img_BxD @ txt_BxD.T
    return -jnp.mean(jnp.diag(jax.nn.log_softmax(logits_BxB, axis=1)))

  return [jax.value_and_grad(loss)(*args) for args in zip(params, graphdefs, rests)]


def losses_and_grads(models, images, tokens, key=None):
  """Per model: a contrastive-style loss and its gradients as {path: array}, in one program."""
  graphdefs, params, rests = zip(*(nnx.split(m, nnx.Param, ...) for m in models))
  results = _losses_and_grads(graphdefs, params, rests, images, tokens, key)
  return [(loss, flat(g)) for loss, g in results]


@pytest.fixture(scope="module")
def inputs():
  images = jax.random.uniform(jax.random.key(1), (B, 32, 32, 3), minval=-1, maxval=1)
  tokens = jax.random.randint(jax.random.key(2), (B, L), 1, 1024)
  ends = jnp.array([3, 7, 11, L - 1])
  tokens = jnp.where(jnp.arange(L)[None] <= ends[:, None], tokens, 0)  # pad after each end token
  return images, tokens


@pytest.fixture(scope="module")
def vit():
  return build_model(model_config(), seed=0)


@pytest.fixture(scope="module")
def coatnet():
  return numpy_weights(COATNET)


@pytest.mark.parametrize("kind", ["vit", "coatnet"])
def test_shapes_unit_norm_float32(kind, request, inputs):
  model = request.getfixturevalue(kind)
  img, txt, img_feat, txt_feat = embed(model, *inputs)
  assert img.shape == txt.shape == (B, 64) and img.dtype == txt.dtype == jnp.float32
  assert img_feat.shape == (B, model.image.out_dim) and txt_feat.shape == (B, model.text.out_dim)
  np.testing.assert_allclose(jnp.linalg.norm(img, axis=-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(jnp.linalg.norm(txt, axis=-1), 1.0, atol=1e-5)


def test_peer_vit_counts_exactly_like_openclip():
  """OpenCLIP's 22,332,417 (../shared/bench/openclip_peer) plus our logit_bias."""
  w, mlp, layers, patch, grid, vocab, context, embed_dim = 256, 1024, 6, 8, 8, 49408, 32, 256
  ln = 2 * w
  block = ln + (w * 3 * w + 3 * w) + (w * w + w) + ln + (w * mlp + mlp) + (mlp * w + w)
  # image: patch conv (no bias) + class token + positions + ln_pre + blocks + ln_post + projection
  image = 3 * patch * patch * w + w + (1 + grid * grid) * w + ln + layers * block + ln + w * embed_dim
  # text: token embedding + positions + blocks + ln_final + projection
  text = vocab * w + context * w + layers * block + ln + w * embed_dim
  head = 2  # log_logit_scale (OpenCLIP's logit_scale) + logit_bias (ours)
  assert (block, image, text) == (789_760, 4_871_168, 17_461_248)
  counts = count_params(get_config("peer-vit").model)
  assert counts == dict(image=image, text=text, head=head, total=22_332_418)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_counts_of_every_preset(preset):
  counts = count_params(get_config(preset).model)
  assert counts["total"] == counts["image"] + counts["text"] + counts["head"] > 0
  if preset == "basic-l":  # about 3B weights (abstract), CoAtNet-7 about 2.44B
    assert abs(counts["total"] - 3e9) < 0.1 * 3e9, counts
    assert abs(counts["image"] - 2.44e9) < 0.1 * 2.44e9, counts


def test_dropout_follows_the_key(vit, inputs):
  model = variant(vit, {"dropout": 0.2})
  key, other = jax.random.key(7), jax.random.key(8)
  same_1, same_2, different = (embed(model, *inputs, k)[:2] for k in (key, key, other))
  none_1, none_2 = (embed(model, *inputs)[:2] for _ in range(2))
  for a, b, c, d in zip(same_1, same_2, different, none_1):
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3 and np.abs(a - d).max() > 1e-3
  for a, b, c in zip(none_1, none_2, embed(vit, *inputs)[:2]):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, atol=1e-6)  # key=None is the dropout-free function


def test_scan_and_loop_layouts_are_the_same_function(vit, inputs):
  """Same seed -> same weights in both layouts (up to compiler rounding: `build` vs `build_model`);
  and, with dropout replayed from one key and a different remat policy in each, the same loss and
  gradients."""
  loop = build({"scan_layers": False, "dropout": 0.2, "remat": "full"})
  scan = variant(vit, {"dropout": 0.2, "remat": "dots_with_no_batch_dims_saveable"})
  loop_params, scan_params = flat(nnx.state(loop, nnx.Param)), flat(nnx.state(scan, nnx.Param))
  assert len(loop_params) > len(scan_params)
  for path, value in unstacked(scan_params, loop_params).items():
    np.testing.assert_allclose(loop_params[path], value, atol=1e-7, err_msg=str(path))  # ulps
  (loop_loss, loop_grads), (scan_loss, scan_grads) = losses_and_grads(
      [loop, scan], *inputs, jax.random.key(3))
  np.testing.assert_allclose(loop_loss, scan_loss, rtol=1e-5)
  for path, g in unstacked(scan_grads, loop_grads).items():
    np.testing.assert_allclose(loop_grads[path], g, atol=1e-5 * np.abs(g).max() + 1e-9,
                               err_msg=str(path))


def test_coatnet_scan_and_loop_layouts_agree(coatnet, inputs):
  """The stacked stage blocks, unstacked into the loop layout, compute the same function."""
  loop_graphdef, loop_state = nnx.split(abstract({**COATNET, "scan_layers": False}))
  weights = unstacked(flat(nnx.state(coatnet)), flat(loop_state))
  loop = nnx.merge(loop_graphdef, nnx.from_flat_state(
      [(path, var.replace(weights[path])) for path, var in nnx.to_flat_state(loop_state)]))
  for a, b in zip(embed(loop, *inputs), embed(coatnet, *inputs)):
    np.testing.assert_allclose(a, b, atol=2e-5)


def test_every_remat_policy_gives_the_same_gradients(vit, inputs):
  policies = list(REMAT_POLICIES)
  results = losses_and_grads([vit] + [variant(vit, {"remat": p}) for p in policies], *inputs)
  (_, reference), rest = results[0], results[1:]
  for policy, (_, policy_grads) in zip(policies, rest):
    for path, g in policy_grads.items():
      scale = np.abs(reference[path]).max() + 1e-12
      assert np.abs(g - reference[path]).max() <= 1e-5 * scale, (policy, path)


@pytest.mark.parametrize("kind", ["vit", "coatnet"])
def test_hand_written_backward_passes_match_autodiff(kind, request, inputs):
  """`models.matmul` (dense layers) and `models.attend` (attention, with CoAtNet's learned relative
  bias and the text tower's causal mask) give autodiff's gradients, under remat too."""
  model = request.getfixturevalue(kind)
  base = {**(COATNET if kind == "coatnet" else {}), "remat": "dots_saveable"}
  autodiff = get_config("tiny", ["xla.dense_grad=autodiff", "xla.attention_grad=autodiff"]).xla
  (loss, grads), (loss_ref, grads_ref) = losses_and_grads(
      [variant(model, base), variant(model, base, autodiff)], *inputs)
  np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
  assert any("rel_bias" in str(path) for path in grads) == (kind == "coatnet")
  for path, g in grads.items():
    scale = np.abs(grads_ref[path]).max() + 1e-12
    assert np.abs(g - grads_ref[path]).max() <= 1e-5 * scale, path


def test_remat_under_scan_lowers_compiled_temp_memory():
  """memory_analysis is deterministic; remat only saves memory on XLA:CPU when blocks are scanned."""

  def temp_bytes(remat):
    config = model_config({"image.vit.layers": 6, "image.vit.patch": 4, "remat": remat})
    graphdef, state = nnx.split(nnx.eval_shape(lambda: TwoTower(config, rngs=nnx.Rngs(0))).image)
    loss = lambda state, x: jnp.sum(nnx.merge(graphdef, state)(x)**2)
    images = jax.ShapeDtypeStruct((32, 32, 32, 3), jnp.float32)
    compiled = jax.jit(jax.value_and_grad(loss)).lower(state, images).compile()
    return compiled.memory_analysis().temp_size_in_bytes  # same with default options

  plain, remat = temp_bytes("none"), temp_bytes("full")
  assert remat < 0.5 * plain, (remat, plain)  # measured: 30.1 MiB vs 110.9 MiB


def test_bfloat16_compute_float32_params_and_embeddings(vit, inputs):
  model = variant(vit, {"dtype": "bfloat16"})
  assert {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype(jnp.float32)}
  img, txt, img_feat, _ = embed(model, *inputs)
  assert img.dtype == txt.dtype == jnp.float32 and img_feat.dtype == jnp.bfloat16
  np.testing.assert_allclose(jnp.linalg.norm(img, axis=-1), 1.0, atol=1e-5)
  for a, b in zip((img, txt), embed(vit, *inputs)[:2]):
    np.testing.assert_allclose(a, b, atol=0.05)


def test_embeddings_do_not_depend_on_batch_mates(coatnet, inputs):
  """No batch statistics anywhere (both CoAtNet norms): microbatching cannot change an embedding."""
  images, tokens = inputs
  mixed = images.at[2:].set(images[:2]), tokens.at[2:].set(tokens[:2])
  for model in (coatnet, variant(coatnet, {**COATNET, "image.coatnet.norm": "group"})):
    for a, b in zip(embed(model, images, tokens)[:2], embed(model, *mixed)[:2]):
      np.testing.assert_allclose(a[:2], b[:2], atol=1e-6)


def test_logit_scale_is_clipped_with_zero_gradient(vit):
  config = model_config()

  def scale(log_scale, learn=True):
    m = nnx.clone(vit)
    m.log_logit_scale[...] = log_scale
    m.learn_temperature = learn
    return m.logit_scale()

  assert np.isclose(vit.logit_scale(), 1 / config.temperature_init)
  value, grad = jax.value_and_grad(scale)(jnp.log(10.0))
  assert np.isclose(value, 10.0) and np.isclose(grad, 10.0)  # d exp(s) / ds
  value, grad = jax.value_and_grad(scale)(jnp.log(2 * config.max_logit_scale))
  assert np.isclose(value, config.max_logit_scale) and grad == 0.0
  assert jax.grad(scale)(jnp.log(10.0), learn=False) == 0.0
  assert vit.logit_bias[...] == config.logit_bias_init


@jit_per_graph
def _encode_text(graphdef, state, tokens):
  return nnx.merge(graphdef, state).encode_text(tokens)


def test_end_token_pooling_and_padding(vit, inputs):
  assert end_positions(jnp.array([[3, 9, 4, 0, 0], [7, 0, 0, 0, 0]])).tolist() == [2, 0]
  _, tokens = inputs  # ends at 3, 7, 11, 23
  encode = lambda t: _encode_text(*nnx.split(vit), t)
  padded = encode(tokens)
  np.testing.assert_allclose(encode(tokens[:3, :12]), padded[:3], atol=1e-6)
  changed = encode(tokens.at[:3, 2].add(1))  # a token before every end does matter
  assert np.abs(changed[:3] - padded[:3]).min() > 0


def test_constrain_is_a_no_op_without_a_mesh_and_shards_the_batch_with_one():
  x = jnp.ones((8, 4))
  assert constrain(x, ("batch", "embed")) is x
  mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
  with jax.sharding.set_mesh(mesh):
    y = jax.jit(lambda x: constrain(x * 2, ("batch", "embed")))(x)
  assert y.sharding.is_equivalent_to(NamedSharding(mesh, P("data", None)), 2)


def test_batch_norm_is_refused():
  with pytest.raises(ValueError, match="coatnet.norm"):
    count_params(model_config({**COATNET, "image.coatnet.norm": "batch"}))


@pytest.mark.parametrize("scan", [True, False])
def test_row_selection_skips_work_but_not_the_function(scan):
  """Asking a Stack for a few output rows (the pooled token) prunes its last block: the values and the
  gradients (weights and input) equal those of the full stack followed by the same rows."""
  from basic_core.models.layers import Block, Options, Stack
  opts = Options(scan=scan)
  stack = Stack(lambda r: Block(32, 4, 2, causal=True, opts=opts, rngs=r), 3, ("batch", "seq", "embed"),
                opts=opts, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(stack)
  x_BxLxD = jax.random.normal(jax.random.key(1), (B, 9, 32))
  rows_BxQ = jnp.array([[0], [8], [3], [5]])

  def pooled(params, x, prune):
    out = nnx.merge(graphdef, params)(x, rows_BxQ=rows_BxQ) if prune else jnp.take_along_axis(
        nnx.merge(graphdef, params)(x), rows_BxQ[..., None], axis=1)
    return jnp.sum(jnp.sin(out)), out

  @jax.jit
  def both(params, x):
    return [jax.value_and_grad(pooled, argnums=(0, 1), has_aux=True)(params, x, p) for p in (True, False)]

  ((_, pruned), pruned_grads), ((_, full), full_grads) = both(params, x_BxLxD)
  assert pruned.shape == (B, 1, 32)
  np.testing.assert_allclose(pruned, full, atol=1e-5)
  for g_pruned, g_full in zip(jax.tree.leaves(pruned_grads), jax.tree.leaves(full_grads)):
    np.testing.assert_allclose(g_pruned, g_full, atol=1e-5 * (np.abs(g_full).max() + 1e-9))


def test_patch_matmul_equals_the_patch_convolution(vit):
  images_BxHxWx3 = jax.random.uniform(jax.random.key(2), (2, 32, 32, 3))
  conv_BxhxwxD = vit.image.patch_embed(images_BxHxWx3)
  np.testing.assert_allclose(vit.image.embed_patches(images_BxHxWx3),
                             conv_BxhxwxD.reshape(2, -1, conv_BxhxwxD.shape[-1]), atol=1e-5)
