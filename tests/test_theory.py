"""The theory package: every check passes in quick mode, and the checks can fail when they should."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from paper_figures import theory_figures
from theory import bound, check, empirical, linear_towers, montecarlo, sweep, symbolic

# One xdist worker runs this module (make test: --dist loadgroup): the quick check's subprocess, made once.
pytestmark = pytest.mark.xdist_group("theory")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def quick_run():
  """python -m theory.check --json --quick --trials 300, parsed: (exit code, {name: result})."""
  proc = subprocess.run([sys.executable, "-m", "theory.check", "--json", "--quick", "--trials", "300"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  results = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
  return proc.returncode, {r["name"]: r for r in results}, proc.stderr


def test_every_check_passes(quick_run):
  code, results, stderr = quick_run
  failed = [name for name, r in results.items() if not r["passed"]]
  assert not failed, f"failed: {failed}\n{stderr}"
  assert code == 0
  expected = {"sym_bias_bound", "bounded_differences_random", "bounded_differences_extremal",
              "bias_within_bound", "bias_bound_sharp", "sphere_bias_constant_pass_rate",
              "sphere_spread_constant_pass_rate", "sphere_broken_bias_no_jensen_pass_rate",
              "sphere_broken_spread_doubled_pass_rate", "lse_lipschitz", "lse_batch_differences",
              "lse_linear_towers_bound",
              "bias_delta_method_constant", "pool_estimator_matches_exact",
              "population_loss_matches_exact", "fixed_model_coverage",
              "linear_towers_gradient", "linear_towers_bound", "linear_towers_bias_within_bound",
              "linear_towers_complexity", "sweep_identifies_rate", "sym_remainder_moments",
              "sym_gradient_first_order", "bias_second_order", "sphere_gradient_first_order",
              "sphere_broken_gradient_no_jensen", "sphere_broken_gradient_rows_only"}
  assert expected <= set(results)
  assert all({"name", "passed", "seconds"} <= set(r) for r in results.values())


def test_check_figures_are_consistent(quick_run):
  _, r, _ = quick_run
  assert r["sphere_bias_constant_pass_rate"]["min_rate"] >= 0.95
  assert r["sphere_broken_bias_no_jensen_pass_rate"]["mean_rate"] <= 0.2
  kappa = r["bias_delta_method_constant"]
  assert abs(kappa["kappa_fitted"] - kappa["kappa_predicted"]) < 0.2 * kappa["kappa_predicted"]
  assert 0 < r["bounded_differences_random"]["max_ratio"] <= 1
  assert r["fixed_model_coverage"]["coverage"] >= 0.95
  assert r["linear_towers_bound"]["bound_ratio_min"] > 1


def test_second_order_constant_is_the_limit_and_a_wrong_kappa_is_not():
  """Proposition 1's remainder is O(1/N^2): on exact binomial sums N^2 (L_N - L_inf) - N kappa tends to
  kappa_2 and stays below C_2; with kappa := rho (the Jensen term dropped) it grows like N instead."""
  for beta, k in ((1.0, 10), (2.0, 2)):
    c = montecarlo.cluster_constants(beta, k)
    exact = {n: montecarlo.cluster_bias_exact(n, beta, k) for n in (256, 1024, 4096, 16384)}
    scaled = {n: n * n * b - n * c["kappa"] for n, b in exact.items()}
    assert abs(scaled[16384] - c["kappa2"]) < 2e-3 * max(1, abs(c["kappa2"]))
    assert abs(scaled[4096] - c["kappa2"]) > abs(scaled[16384] - c["kappa2"])  # converging, at rate ~1/N
    assert max(map(abs, scaled.values())) <= bound.bias_remainder_constant(beta)
    wrong = {n: n * n * b - n * c["rho"] for n, b in exact.items()}
    assert abs(wrong[16384]) > 10 * abs(wrong[1024])


def test_exit_code_is_nonzero_when_a_check_fails(monkeypatch, capsys):
  monkeypatch.setattr(check, "run", lambda s, report, tmp: report({"name": "x", "passed": False}) or False)
  assert check.main(["--json", "--quick"]) == 1
  assert json.loads(capsys.readouterr().out) == {"name": "x", "passed": False}


def test_bounded_difference_constant_is_needed_in_full():
  """Dropping the other rows' term from c_N makes the extremal replacement violate it."""
  n, beta = 64, 2.0
  ratio = montecarlo.extremal_replacement_ratio(n, beta)
  assert ratio <= 1
  assert ratio * bound.bounded_difference_constant(n, beta) > bound.own_row_range(n, beta)


def test_symbolic_helpers_reject_false_claims():
  assert not symbolic._positive(symbolic.A - symbolic.B)
  assert not symbolic._zero(symbolic.B - symbolic.A)
  assert symbolic._positive(symbolic.B - symbolic.A)


def test_losses_match_a_naive_loop():
  rng = np.random.default_rng(0)
  img, txt = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in rng.normal(size=(2, 12, 5)))
  beta, n = 3.0, 4
  naive = {"i2t": [], "t2i": []}
  for b in range(0, 12, n):
    s = img[b:b + n] @ txt[b:b + n].T
    for i in range(n):
      naive["i2t"].append(-beta * s[i, i] + np.log(np.mean(np.exp(beta * s[i]))))
      naive["t2i"].append(-beta * s[i, i] + np.log(np.mean(np.exp(beta * s[:, i]))))
  for d in ("i2t", "t2i"):
    assert np.isclose(empirical.train_objective(img, txt, n, beta, d), np.mean(naive[d]))
  assert np.isclose(empirical.train_objective(img, txt, n, beta), np.mean(naive["i2t"] + naive["t2i"]))
  s = img @ txt.T
  off = ~np.eye(12, dtype=bool)
  loo = [-beta * s[i, i] + np.log(np.mean(np.exp(beta * s[i][off[i]]))) for i in range(12)]
  assert np.isclose(empirical.infinite_batch_loss(img, txt, beta, "i2t")[0], np.mean(loo))
  with pytest.raises(ValueError):
    empirical.train_objective(img, txt, 5, beta)


def test_bound_terms_shrink_with_n_and_m():
  comp = bound.Complexity(sim=2.0, tower=1.0)
  totals_n = [bound.uniform_terms(4096, n, 1.0, 0.05, comp)["total"] for n in (2, 8, 64, 1024)]
  totals_m = [bound.uniform_terms(m, 64, 1.0, 0.05, comp)["total"] for m in (512, 4096, 65536)]
  assert np.all(np.diff(totals_n) < 0) and np.all(np.diff(totals_m) < 0)
  assert bound.uniform_terms(4096, 64, 1.0, 0.05, comp, two_sided=False)["total"] < totals_n[2]
  assert [bound.bias_bound(n, 1.0) * n for n in (1024, 4096)] == pytest.approx([np.expm1(2.0)] * 2,
                                                                                rel=1e-2)


@pytest.mark.parametrize("exponent, effect, expected", [(0.5, 0.2, "inv_sqrt"), (1.0, 0.2, "inv"),
                                                        (1.0, 0.0, "none")])
def test_evaluate_sweep_on_a_simulated_sweep(tmp_path, exponent, effect, expected):
  path = str(tmp_path / "results.csv")
  df = sweep.simulate_sweep_csv(path, np.random.default_rng(1), exponent, effect=effect)
  out = sweep.evaluate_sweep(path)
  assert list(out["column"]) == ["gap_fixed_eval"]  # final_loss has no 'gap' in its name
  row = out.iloc[0]
  assert row["supported"] == expected and row["seed_effects"]
  if effect:
    true_b = effect * df.batch_size.min()**exponent
    name = "inv_sqrt" if exponent == 0.5 else "inv"
    assert row[f"{name}_b_ci"][0] <= true_b <= row[f"{name}_b_ci"][1]
    assert row["exponent_ci"][0] <= exponent <= row["exponent_ci"][1]


def test_evaluate_sweep_groups_and_validates(tmp_path):
  rng = np.random.default_rng(2)
  parts = []
  for size, exponent in (("S", 0.5), ("M", 1.0)):
    path = str(tmp_path / f"{size}.csv")
    parts.append(sweep.simulate_sweep_csv(path, rng, exponent).assign(model=size))
  both = str(tmp_path / "both.csv")
  pd.concat(parts).to_csv(both, index=False)
  out = sweep.evaluate_sweep(both, by=("model",)).set_index("model")
  assert out.loc["S", "supported"] == "inv_sqrt" and out.loc["M", "supported"] == "inv"
  theory_figures.plot_rate_fits(both, str(tmp_path / "fit.png"), by=("model",))
  assert (tmp_path / "fit.png").stat().st_size > 10_000
  two = pd.DataFrame({"batch_size": [8, 8, 64, 64], "seed": [0, 1, 0, 1], "gap": [0.3, 0.2, 0.1, 0.0]})
  two.to_csv(tmp_path / "two.csv", index=False)
  assert sweep.evaluate_sweep(str(tmp_path / "two.csv")).iloc[0]["supported"] == "too few batch sizes"
  pd.DataFrame({"batch_size": [1, 2], "gap": [0.1, 0.2]}).to_csv(tmp_path / "bad.csv", index=False)
  with pytest.raises(ValueError, match="seed"):
    sweep.evaluate_sweep(str(tmp_path / "bad.csv"))


def test_figures_are_drawn_from_tables_shaped_like_theory_tables(tmp_path, capsys):
  """Both modes of python -m paper_figures.theory_figures, on tiny tables of theory.tables' shape."""
  cfg = linear_towers.SweepConfig(m=64, batch_sizes=(4, 16, 32), seeds=(0, 1), steps=3, n_test=256, n_sigma=8)
  towers_csv = tmp_path / "linear_towers_sweep.csv"
  linear_towers.run_sweep(cfg).to_csv(towers_csv, index=False)
  table = montecarlo.batch_bias(montecarlo.default_world(), 2.0, [2, 4, 8, 16], 20,
                                np.random.default_rng(0))
  table.assign(kappa=0.67, kappa_se=0.01).to_csv(tmp_path / "batch_bias.csv", index=False)
  out = tmp_path / "out"
  assert theory_figures.main(["--data", str(tmp_path), "--out", str(out), "--fit-from", "2"]) == 0
  assert theory_figures.main(["--results", str(towers_csv), "--out", str(out)]) == 0
  drawn = [out / f"{name}.png" for name in ("bound_vs_gap", "linear_towers_sweep_fit", "batch_bias",
                                            "gap_vs_theory_rates")]
  assert capsys.readouterr().out.split() == [str(p) for p in drawn]
  assert all(p.stat().st_size > 10_000 for p in drawn)
