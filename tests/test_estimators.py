"""The loss's estimators (loss.estimator = sogclr | queue) against float64 references and the plain loss;
exact under BASIC accumulation, the tiled loss and a data mesh; their state through a stop and resume."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from test_accumulate import _batch, _embed, _max_rel_err, _toy_params
from test_losses import _logsumexp, _unit

from basic_core import accumulate, checkpoint, data, losses, train
from basic_core import state as state_lib
from basic_core import step as step_lib
from basic_core.configs import ConfigError, get_config, microbatching

N, D, POOL, SCALE = 32, 8, 50, 10.0


def numpy_pairs(img, txt, scale, g, a, b, queue_img=None, queue_txt=None):
  """Float64 reference: each pair's image->text and text->image cross-entropy against its group's G
  candidates (and the queued ones), and the gradients of sum_i a_i CE_img_i + b_i CE_txt_i with respect
  to img, txt and the scale, written out per anchor."""
  empty = np.zeros((0, img.shape[1]))
  queued = {0: empty if queue_txt is None else queue_txt, 1: empty if queue_img is None else queue_img}
  ces, grads = (np.zeros(len(img)), np.zeros(len(img))), (np.zeros_like(img), np.zeros_like(txt))
  d_scale = 0.0
  for i in range(len(img)):
    start = i // g * g
    group = np.arange(start, start + g)
    for side, (anchors, others, weight) in enumerate(((img, txt, a), (txt, img, b))):
      candidates = np.concatenate([others[group], queued[side]])
      sims = candidates @ anchors[i]
      p = np.exp(scale * sims - _logsumexp(scale * sims, 0))
      pos = i - start
      ces[side][i] = _logsumexp(scale * sims, 0) - scale * sims[pos]
      grads[side][i] += weight[i] * scale * (p @ candidates - candidates[pos])
      coef = p[:g] - np.eye(g)[pos]
      grads[1 - side][group] += weight[i] * scale * coef[:, None] * anchors[i]
      d_scale += weight[i] * (p @ sims - sims[pos])
  return ces, (*grads, d_scale)


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  return _unit(rng, N, D), _unit(rng, N, D), rng


def _as_f32(*xs):
  return tuple(jnp.asarray(x, jnp.float32) for x in xs)


def _sogclr_state(rng):
  """A table with a history: half the pool seen before (log u in [-1, 2]), half never (-inf)."""
  seen = rng.random(POOL) < 0.5
  return {f"log_u_{side}": jnp.asarray(np.where(seen, rng.uniform(-1, 2, POOL), -np.inf), jnp.float32)
          for side in ("image", "text")}


def _queue_state(rng, q, filled):
  return dict(queue_image=jnp.asarray(_unit(rng, q, D), jnp.float32),
              queue_text=jnp.asarray(_unit(rng, q, D), jnp.float32), queue_filled=jnp.int32(filled))


def _loss_fn(estimator, group, tile, gamma=0.5, n=N):
  """config.loss's `fn(img, txt, scale, state, index) -> (loss, next state)` (make_estimator_loss_fn)."""
  config = get_config("tiny", [f"loss.estimator={estimator}", f"loss.group_size={group}", f"loss.tile={tile}",
                               f"loss.sogclr_gamma={gamma}", f"train.batch_size={n}"])
  fn = losses.make_estimator_loss_fn(config.loss)
  return lambda i, t, s, state, index: fn(i, t, s, None, state, index)


@functools.cache
def _value_and_grads_fn(estimator, group, tile, gamma=0.5):
  """Jitted ((loss, next state), (d_img, d_txt, d_scale))."""
  fn = jax.value_and_grad(_loss_fn(estimator, group, tile, gamma), argnums=(0, 1, 2), has_aux=True)
  return jax.jit(fn)


def _value_and_grads(estimator, group, tile, img, txt, state=None, index=None, gamma=0.5):
  return _value_and_grads_fn(estimator, group, tile, gamma)(*_as_f32(img, txt, SCALE), state, index)


def _assert_grads_close(got, want, rtol=1e-4):
  for x, y in zip(got, want, strict=True):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * np.abs(y).max())


CASES = [(8, 0), (0, 8)]  # (loss.group_size, loss.tile): grouped dense, whole-batch tiled


@pytest.mark.parametrize("group,tile", CASES)
def test_sogclr_with_gamma_one_is_the_plain_grouped_loss(group, tile):
  """gamma = 1: u_i is the batch's own g_i, whatever the table held, and (1/g_i) grad g_i = grad log g_i
  is the plain loss's gradient; the table then holds log g_i = CE_i - log G at the batch's indices."""
  img, txt, rng = _inputs()
  state, index = _sogclr_state(rng), rng.permutation(POOL)[:N]
  (want_loss, _), want_grads = _value_and_grads("plain", group, tile, img, txt)
  (loss, table), grads = _value_and_grads("sogclr", group, tile, img, txt, state, index, gamma=1.0)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
  _assert_grads_close(grads, want_grads, rtol=1e-6)
  ces, _ = numpy_pairs(img, txt, SCALE, group or N, np.zeros(N), np.zeros(N))
  for side, ce in zip(("image", "text"), ces):
    expected = np.asarray(state[f"log_u_{side}"]).copy()
    expected[index] = ce - np.log(group or N)
    np.testing.assert_allclose(table[f"log_u_{side}"], expected, rtol=1e-5, atol=1e-5)
  _, history = _value_and_grads("sogclr", group, tile, img, txt, state, index)  # gamma < 1: it counts
  assert max(float(jnp.abs(x - y).max()) for x, y in zip(history, grads)) > 1e-2


@pytest.mark.parametrize("group,tile", CASES)
def test_sogclr_against_the_definition(group, tile):
  """gamma = 0.5 on a table with a history: u_i <- (1 - gamma) u_i + gamma g_i (g_i on a first visit),
  gradient (1/u_i) grad g_i = (g_i / u_i) grad CE_i, value the plain loss; against float64."""
  img, txt, rng = _inputs(1)
  state, index, gamma, g = _sogclr_state(rng), rng.permutation(POOL)[:N], 0.5, group or N
  ces, _ = numpy_pairs(img, txt, SCALE, g, np.zeros(N), np.zeros(N))
  weights, tables = [], {}
  for side, ce in zip(("image", "text"), ces):
    old = np.asarray(state[f"log_u_{side}"], np.float64)
    g_i, u_old = np.exp(ce) / g, np.exp(old[index])
    u = np.where(np.isfinite(old[index]), (1 - gamma) * u_old + gamma * g_i, g_i)
    weights.append(0.5 / N * g_i / u)
    tables[side] = old.copy()
    tables[side][index] = np.log(u)
  _, want_grads = numpy_pairs(img, txt, SCALE, g, *weights)
  (loss, table), grads = _value_and_grads("sogclr", group, tile, img, txt, state, index, gamma=gamma)
  np.testing.assert_allclose(loss, 0.5 * (ces[0].mean() + ces[1].mean()), rtol=2e-5)
  _assert_grads_close(grads, want_grads)
  for side in ("image", "text"):
    np.testing.assert_allclose(table[f"log_u_{side}"], tables[side], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("group,tile", CASES)
def test_queue_adds_its_filled_entries_to_every_group(group, tile):
  """Image i's softmax over its group's texts and the filled queued texts (text i's over images and
  queued images), against float64; then the batch enters the queue and the oldest leave. A queue of
  size 0, or one not filled yet, is the plain grouped loss."""
  img, txt, rng = _inputs(3)
  (plain, _), _ = _value_and_grads("plain", group, tile, img, txt)
  for q, filled in ((0, 0), (16, 0), (16, 10), (48, 40)):
    state = _queue_state(rng, q, filled)
    queued = [np.asarray(state[k], np.float64)[q - filled:] for k in ("queue_image", "queue_text")]
    ces, want = numpy_pairs(img, txt, SCALE, group or N, np.full(N, 0.5 / N), np.full(N, 0.5 / N), *queued)
    (loss, after), grads = _value_and_grads("queue", group, tile, img, txt, state)
    np.testing.assert_allclose(loss, 0.5 * (ces[0].mean() + ces[1].mean()), rtol=2e-5)
    _assert_grads_close(grads, want)
    if not filled:
      np.testing.assert_allclose(loss, plain, rtol=1e-6)
    assert int(after["queue_filled"]) == min(filled + N, q)
    for key, new in (("queue_image", img), ("queue_text", txt)):
      expected = np.concatenate([np.asarray(state[key]), np.asarray(new, np.float32)])[N:]
      np.testing.assert_array_equal(after[key], expected)


# ---- BASIC accumulation -------------------------------------------------------------------------------


def _estimator_case(estimator, group, tile, rng, n=64):
  """(head_loss_fn(img, txt, params) -> (loss, next state), state) of an estimator, for a batch of n
  (SogCLR's batch repeats some pool indices, as at an epoch boundary)."""
  fn = _loss_fn(estimator, group, tile, n=n)
  if estimator == "sogclr":
    state, index = _sogclr_state(rng), jnp.asarray(rng.permutation(n)[:n] % POOL, jnp.int32)
  else:
    state, index = _queue_state(rng, 16, filled=10), None
  return lambda img, txt, p: fn(img, txt, jnp.exp(p["log_scale"]), state, index), state


@pytest.mark.parametrize("estimator,group,tile,k", [("sogclr", 8, 4, 4), ("queue", 0, 8, 2)])
def test_accumulation_equals_naive_with_each_estimator(estimator, group, tile, k):
  """Toy towers with per-example dropout: K microbatches give the naive step's loss, gradients and next
  estimator state, since the loss (and so the update) runs once on the whole batch's embeddings."""
  rng = np.random.default_rng(4)
  params, batch, key = _toy_params(jax.random.key(0)), _batch(), jax.random.key(7)
  head_loss, state = _estimator_case(estimator, group, tile, rng)
  (loss_ref, next_ref), grads_ref = jax.jit(lambda p: accumulate.naive_value_and_grad(
      _embed, head_loss, p, batch, key, has_aux=True))(params)
  (loss, next_state), grads = jax.jit(lambda p: accumulate.accumulated_value_and_grad(
      _embed, head_loss, p, batch, key, k, has_aux=True))(params)
  np.testing.assert_allclose(loss, loss_ref, rtol=1e-6)
  assert _max_rel_err(grads, grads_ref) <= 1e-5
  for got, want in zip(jax.tree.leaves(next_state), jax.tree.leaves(next_ref), strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert max(float(jnp.abs(x - y).max()) for x, y in zip(jax.tree.leaves(next_ref), jax.tree.leaves(state))
             if x.dtype == jnp.float32) > 1e-2  # the state really moved


# ---- a data mesh ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator,group,tile,shape", [("sogclr", 0, 16, (8, 1)), ("queue", 8, 4, (4, 2))])
def test_estimators_on_a_data_mesh_equal_one_device(estimator, group, tile, shape):
  """Rows split over the data axis (the tiled whole-batch loss and the queue's rows through
  `jax.shard_map`, groups through the compiler): value, gradients and next state as on one device."""
  rng = np.random.default_rng(5)
  img, txt = _as_f32(_unit(rng, 64, D), _unit(rng, 64, D))
  head_loss, _ = _estimator_case(estimator, group, tile, rng)
  fn = jax.value_and_grad(lambda i, t, log_scale: head_loss(i, t, dict(log_scale=log_scale)),
                          argnums=(0, 1, 2), has_aux=True)
  args = (img, txt, jnp.log(jnp.float32(SCALE)))
  (loss_ref, next_ref), grads_ref = jax.jit(fn)(*args)
  mesh = Mesh(np.asarray(jax.devices()[:8]).reshape(shape), ("data", "model"),
              axis_types=(AxisType.Auto, AxisType.Auto))
  rows = NamedSharding(mesh, P("data"))

  def under_mesh(*a):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*a)

  (loss, next_state), grads = jax.jit(under_mesh, in_shardings=(rows, rows, None))(*args)
  np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
  _assert_grads_close(grads, grads_ref, rtol=1e-5)
  assert grads[0].sharding.spec[0] == "data"
  for got, want in zip(jax.tree.leaves(next_state), jax.tree.leaves(next_ref), strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ---- the trainer's state: checkpointed, resumed -----------------------------------------------------

# A small model on the built-in scenes, dropout on; SogCLR's pool of 96 pairs is seen 2.7 times in 8
# steps; the queue (48 > the batch of 32) runs on fresh pairs, grouped, tiled and accumulated.
FAST = ["train.batch_size=32", "model.image.image_size=16", "model.image.vit.patch=8",
        "model.image.vit.width=32", "model.image.vit.layers=1", "model.text.width=32", "model.text.layers=1",
        "model.embed_dim=16", "model.dropout=0.1"]
ESTIMATOR_RUNS = {"sogclr": ["loss.estimator=sogclr", "data.num_train=96", "loss.sogclr_gamma=0.5"],
                  "queue": ["loss.estimator=queue", "data.fresh=true", "loss.queue_size=48",
                            "loss.group_size=8", "loss.tile=4", "train.microbatch_size=16"]}


@pytest.mark.parametrize("estimator", ["sogclr", "queue"])
def test_estimator_state_survives_a_kill_and_resume_bit_identically(tmp_path, estimator):
  """The trainer's pieces (state.build, the jitted step, the pipeline, the Checkpointer): 8 steps with a
  checkpoint after 4, against a run killed after that checkpoint and resumed from it as train.py
  resumes (state restored into the built structure, the pipeline's position set): the estimator's
  arrays and the parameters end bitwise equal."""
  config = get_config("tiny", FAST + ESTIMATOR_RUNS[estimator])
  tokenizer = data.get_tokenizer(config.data, config.model.text.context)
  built = state_lib.build(config)
  step = step_lib.jit_train_step(step_lib.make_train_step(
      built.fns, built.tx, config.loss, seed=config.seed, microbatches=microbatching(config.train)[1]))
  ckpt = checkpoint.Checkpointer(tmp_path, 2)
  pipeline, state = data.train_pipeline(config, tokenizer), built.state
  for s in range(8):
    if s == 4:
      ckpt.save(s, state, dict(data=pipeline.get_state()))
    batch = next(pipeline)
    assert ("index" in batch) == (estimator == "sogclr")  # a pool's rows carry their pool index
    step = step.lower(state, batch).compile() if s == 0 else step
    state, _ = step(state, batch)
  once = jax.device_get(state)
  start, state, meta = ckpt.restore_latest(state)  # killed after the checkpoint of step 4
  pipeline = data.train_pipeline(config, tokenizer)
  pipeline.set_state(meta["data"])
  for _ in range(start, 8):
    state, _ = step(state, next(pipeline))
  resumed = jax.device_get(state)
  ckpt.close()
  assert start == 4 and set(resumed["estimator"]) == set(once["estimator"])
  for a, b in zip(jax.tree.leaves(once), jax.tree.leaves(resumed), strict=True):
    np.testing.assert_array_equal(a, b)
  if estimator == "sogclr":  # every pool pair was seen, through the batches' pool indices
    assert all(np.isfinite(once["estimator"][k]).all() for k in ("log_u_image", "log_u_text"))
  else:
    assert int(once["estimator"]["queue_filled"]) == 48


# ---- configs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides,message", [
    (["loss.estimator=sogclr", "data.fresh=true"], "loss.estimator=sogclr keeps an estimate per pair"),
    (["loss.estimator=moco"], "loss.estimator must be one of"),
    (["loss.sogclr_gamma=0"], r"loss.sogclr_gamma must be in \(0, 1\]"),
    (["loss.estimator=queue", "loss.kind=sigmoid"], "needs loss.kind=softmax"),
    (["loss.queue_size=-1"], "loss.queue_size must be >= 0"),
])
def test_estimator_configs_that_cannot_run_are_one_line_errors(overrides, message):
  with pytest.raises(ConfigError, match=message) as e:
    get_config("tiny", overrides)
  assert "\n" not in str(e.value)


def test_a_sogclr_table_smaller_than_the_pool_is_refused(tmp_path):
  config = get_config("tiny", ["loss.estimator=sogclr", "data.world=digits", "data.num_train=100",
                               "eval.batch_size=64"])
  with pytest.raises(ConfigError, match=r"training data has \d+ pairs: set data.num_train="):
    train.train(config, tmp_path)
  assert not (tmp_path / "checkpoints").exists()
