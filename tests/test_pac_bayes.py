"""theory/pac_bayes.py: the bounds' algebra against independent recomputation, the union-bound ledger,
coverage where the truth is known, wrong constants caught, and the linear-tower evaluation end to end."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from theory import bound, empirical, linear_towers, lse_bound, montecarlo, synthetic
from theory import pac_bayes as pb


@pytest.mark.parametrize("p", [0.0, 0.03, 0.3, 0.8, 1.0])
@pytest.mark.parametrize("eps", [1e-3, 0.05, 1.0])
def test_kl_inverses_match_a_brute_force_search(p, eps):
  grid = np.linspace(0, 1, 200_001)
  inside = grid[pb.kl_bernoulli(p, grid) <= eps]
  upper, lower = float(pb.kl_upper(p, eps)), float(pb.kl_lower(p, eps))
  assert inside.max() <= upper <= inside.max() + 1e-5  # never below the true inverse
  assert inside.min() - 1e-5 <= lower <= inside.min()


@pytest.mark.parametrize("n", [1, 5, 32, 300])
def test_maurer_xi_is_the_bernoulli_expectation_of_exp_n_kl(n):
  k = np.arange(n + 1)
  for p in (0.1, 0.5):  # the same value for every mean
    direct = np.sum(stats.binom.pmf(k, n, p) * np.exp(n * pb.kl_bernoulli(k / n, p)))
    assert pb.maurer_xi(n) == pytest.approx(direct, rel=1e-9)
  assert np.sqrt(n) <= pb.maurer_xi(n) and (n < 8 or pb.maurer_xi(n) <= 2 * np.sqrt(n))


def test_unexpected_bernstein_lemma_holds_and_the_sub_gaussian_psi_is_caught():
  """exp(lam xi - psi(lam) xi^2) <= 1 + lam xi for xi >= -1; psi(u) = u^2 / 2 (a plausible wrong
  constant) breaks it at xi = -1, where the true psi makes it an equality."""
  xi, lam = np.meshgrid(np.linspace(-1, 20, 2001), np.linspace(0, 0.99, 199))
  assert np.all(np.exp(lam * xi - pb.psi(lam) * xi**2) <= (1 + lam * xi) * (1 + 1e-12) + 1e-300)
  wrong = np.exp(lam * xi - lam**2 / 2 * xi**2) - (1 + lam * xi)
  assert wrong.max() > 1e-3


def test_mcdiarmid_gap_is_the_grid_minimum_of_the_closed_form():
  m, c, delta = 8192, bound.bounded_difference_constant(32, 1.0), 0.01
  for kl in (0.0, 3.0, 1e3, 1e6):
    log_term = kl + np.log(pb.LAMBDA_GRID / delta)
    best = c * np.sqrt(log_term / (2 * m))  # the optimum over a continuous lambda
    got = pb.mcdiarmid_gap(kl, m, c, delta)
    assert best <= got <= best * (np.sqrt(2) + 1 / np.sqrt(2)) / 2 + 1e-12  # grid ratio 2


def test_batch_loss_range_is_attained_and_has_the_width_of_lemma_1():
  beta = 1.5
  lo, hi = pb.batch_loss_range(2, beta)
  assert hi - lo == pytest.approx(bound.own_row_range(2, beta))
  aligned = empirical.train_objective(np.array([[1.0], [-1.0]]), np.array([[1.0], [-1.0]]), 2, beta)
  crossed = empirical.train_objective(np.array([[1.0], [-1.0]]), np.array([[-1.0], [1.0]]), 2, beta)
  assert (aligned, crossed) == pytest.approx((lo, hi))
  rng = np.random.default_rng(0)
  for n in (2, 16, 64):
    lo, hi = pb.batch_loss_range(n, beta)
    emb = rng.normal(size=(2, 64 * n, 3))
    emb /= np.linalg.norm(emb, axis=2, keepdims=True)
    values = empirical.batch_loss_values(emb[0], emb[1], n, beta)
    assert lo <= values.min() and values.max() <= hi


def test_an_own_row_only_constant_is_exceeded_by_the_extremal_replacement():
  """(A) uses c_N; the own-row range w_N alone (forgetting the other rows) is beaten by a real pair."""
  for n in (16, 256):
    change = montecarlo.extremal_replacement_ratio(n, 2.0) * bound.bounded_difference_constant(n, 2.0)
    assert bound.own_row_range(n, 2.0) < change <= bound.bounded_difference_constant(n, 2.0) + 1e-9
    assert bound.bounded_difference_constant(n, 2.0) <= n * bound.own_row_range(n, 2.0)


def test_the_ledger_spends_delta_exactly_once():
  """Recompute certify's numbers from the primitives with the shares written out by hand."""
  rng = np.random.default_rng(1)
  problem = pb.Problem(m=4096, batch_size=8, beta=1.0, delta=0.05)
  assert problem.families == pb.FAMILIES and problem.n_batches == 512
  losses = rng.uniform(-0.3, 0.1, size=(512, 6))
  kl, out = 7.0, pb.certify(problem, 7.0, losses)
  d = 0.05 / (len(pb.SIGMAS) * 3)  # sigma grid, then three families
  lo, hi = pb.batch_loss_range(8, 1.0)
  first, second = losses[:, :3], losses[:, 3:]
  center = first.mean()
  train_lo = pb.mean_lower(second, lo, center, d * pb.MC_SHARE / 2)
  train_hi = pb.mean_upper(second, hi, center, d * pb.MC_SHARE / 2)
  c = problem.shift(center)
  assert abs(c - center) <= (hi - lo) / pb.SHIFT_GRID / 2
  moment = pb.mean_upper(
    (second - c) ** 2, max(hi - c, c - lo) ** 2, ((first - c) ** 2).mean(), d * pb.MC_SHARE
  )
  expected = {
    "bound_mcdiarmid": pb.mcdiarmid_gap(kl, 4096, lse_bound.concentration_constant(8, 1.0), d),
    "bound_kl": pb.kl_gap(kl, 512, lo, hi, train_lo, train_hi, d * (1 - pb.MC_SHARE)),
    "bound_bernstein": pb.bernstein_gap(kl, 512, hi - c, moment, d * (1 - pb.MC_SHARE) / pb.SHIFT_GRID),
  }
  assert {k: out[k] for k in expected} == pytest.approx(expected)
  assert out["bound"] == min(expected.values())
  # every event's share, summed over all events, is delta
  per_family = [
    d,
    d * (1 - pb.MC_SHARE) + 2 * d * pb.MC_SHARE / 2,
    pb.SHIFT_GRID * d * (1 - pb.MC_SHARE) / pb.SHIFT_GRID + d * pb.MC_SHARE,
  ]
  assert len(pb.SIGMAS) * sum(per_family) == pytest.approx(0.05)
  few = pb.Problem(m=4096, batch_size=256, beta=1.0)  # 16 batches: only (A), with the whole share
  assert few.families == ("mcdiarmid",) and few.family_delta == pytest.approx(0.05 / len(pb.SIGMAS))


def test_pair_level_family_takes_the_better_of_pairs_and_batches():
  """(A) uses c*_N = min(c_N, sqrt(N) w_N): at beta = 1, N = 2 the batches' 2.83, not the pairs' 3.43;
  at N = 64 both views give c_N. The coverage test below (N = 2) holds it to its promise."""
  assert lse_bound.concentration_constant(2, 1.0) == pytest.approx(2 * np.sqrt(2))  # w_2 = 2 at beta = 1
  assert bound.bounded_difference_constant(2, 1.0) == pytest.approx(3.4338, abs=1e-4)
  for n, c in ((2, 2 * np.sqrt(2)), (64, bound.bounded_difference_constant(64, 1.0))):
    problem = pb.Problem(m=8192, batch_size=n, beta=1.0, delta=0.05)
    got = pb.certify(problem, 3.0, np.zeros((problem.n_batches, 2)))["bound_mcdiarmid"]
    assert got == pytest.approx(pb.mcdiarmid_gap(3.0, 8192, c, problem.family_delta))
  problem = pb.Problem(m=8192, batch_size=2, beta=1.0, delta=0.05)
  pairs = pb.mcdiarmid_gap(3.0, 8192, bound.bounded_difference_constant(2, 1.0), problem.family_delta)
  assert pb.certify(problem, 3.0, np.zeros((4096, 2)))["bound_mcdiarmid"] < pairs / 1.2


def test_monte_carlo_bounds_cover_the_mean_of_independent_draws():
  """Independent, not identically distributed values in [0, 1]: the upper bound holds in >= 1 - delta
  of repetitions, and the same harness rejects a slack 20x too small."""
  rng = np.random.default_rng(2)
  means = rng.uniform(0.05, 0.3, size=400)
  hits, wrong = [], []
  for _ in range(300):
    values = rng.binomial(1, means).astype(float)
    center = rng.binomial(1, means).mean()  # fixed before `values`, as certify does
    upper = pb.mean_upper(values, 1.0, center, 0.2)
    hits.append(means.mean() <= upper)
    wrong.append(means.mean() <= values.mean() + (upper - values.mean()) / 20)
  assert np.mean(hits) >= 0.8 and np.mean(wrong) < 0.8
  assert pb.mean_lower(values, 0.0, center, 0.2) <= values.mean() <= upper


def test_bounds_cover_a_fixed_model_on_the_vmf_world():
  """Fixed theta (identity towers, aligned vMF world), Q = P = the point mass, KL = 0: each family's
  bound on L_N - L^_N holds in >= 1 - delta of fresh samples; the tightest bound made 30x smaller is
  caught (the harness can fail)."""
  world = montecarlo.default_world()
  w, v = montecarlo.identity_towers(world)
  beta, n, m, rng = 2.0, 2, 4096, np.random.default_rng(3)
  x, y = synthetic.sample_pairs(world, 65536, rng)
  l_inf, _ = synthetic.symmetric_infinite_batch_loss(world, w, v, beta, 65536, rng)
  _, bias = montecarlo.batch_statistics(world, w, v, beta, x, y, n, "sym")
  truth = l_inf + bias.mean()  # L_N, to about 1e-3
  problem = pb.Problem(m, n, beta, delta=0.2, n_choices=1)
  gaps, bounds = [], []
  for _ in range(100):
    batch_losses = empirical.batch_loss_values(*synthetic.sample_pairs(world, m, rng), n, beta)
    cert = pb.certify(problem, 0.0, np.repeat(batch_losses[:, None], 2, axis=1))
    gaps.append(truth - batch_losses.mean())
    bounds.append([cert[f"bound_{f}"] for f in pb.FAMILIES])
  gaps, bounds = np.array(gaps)[:, None], np.array(bounds)
  assert np.all((gaps <= bounds).mean(0) >= 0.8)
  assert (gaps[:, 0] <= bounds.min(1) / 30).mean() < 0.8


def test_posterior_draws_and_the_data_independent_prior():
  rng = np.random.default_rng(4)
  stack = rng.normal(size=(5, 3, 7))
  assert np.allclose(pb.project_stack(stack), [linear_towers.project_spectral(s) for s in stack])
  cfg = pb.LinearConfig(sweep=linear_towers.SweepConfig(steps=3))
  world = cfg.sweep.world()
  samples = [synthetic.sample_pairs(world, 64, np.random.default_rng(s)) for s in (5, 6)]
  priors = [pb.fit("init", x, y, 8, seed=0, cfg=cfg)[0] for x, y in samples]
  assert np.array_equal(priors[0][0], priors[1][0]) and np.array_equal(priors[0][1], priors[1][1])
  w_K, _ = pb.sample_towers(*priors[0], 0.5, 10, rng)
  assert np.linalg.norm(w_K, ord=2, axis=(1, 2)).max() <= 1 + 1e-9


def test_linear_towers_run_end_to_end(tmp_path, monkeypatch):
  cfg = pb.LinearConfig(
    ms=(256,),
    batch_sizes=(2, 64),
    seeds=(0,),
    mc_values=256,
    pilot_draws=1,
    eval_draws=2,
    finetune_steps=3,
    sweep=linear_towers.SweepConfig(steps=10, n_test=1024),
  )
  monkeypatch.setattr(pb, "QUICK", cfg)
  assert pb.main(["--out", str(tmp_path), "--quick"]) == 0
  df = pd.read_csv(tmp_path / "pac_bayes_linear_towers.csv")
  assert len(df) == 8  # 2 batch sizes x 2 priors x 2 sigma rules
  for col in (
    "m",
    "batch_size",
    "seed",
    "prior",
    "sigma",
    "kl",
    "train_loss_q",
    "test_loss_q",
    "bound",
    "gap_theta",
    "gap_q",
    "trivial_bound",
    "ratio_theta",
  ):
    assert df[col].notna().all(), col
  assert set(df["sigma"]) <= set(pb.SIGMAS) and (df["kl"] >= 0).all()
  assert (df.loc[df["batch_size"] == 2, "families"] == "mcdiarmid+kl+bernstein").all()
  assert (df.loc[df["batch_size"] == 64, "families"] == "mcdiarmid").all()
  assert (df["m_bound"] == np.where(df["prior"] == "half", 128, 256)).all()
  # the better of two priors is quoted, so each spends delta / 2: twice the sigma grid's choices
  assert (df["n_choices"] == 2 * len(pb.SIGMAS)).all()
