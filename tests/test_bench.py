"""The OpenCLIP comparison table: medians over rounds, max RSS, ratios, share of the matmul roof."""

from basic_core.bench import compare_table


def row(side, speed, rss, round_, **kw):
  return dict(name="plain", side=side, round=round_, samples_per_s=speed, peak_rss_mb=rss, batch=256,
              microbatch=256, remat="none", hw_gflop_per_s=100.0 + round_, **kw)


def test_table_takes_medians_and_max_rss():
  rows = [row("ours", 40.0, 3000, 0), row("openclip", 20.0, 4000, 0), row("ours", 44.0, 3100, 1),
          row("openclip", 30.0, 3900, 1), row("ours", 60.0, 2900, 2), row("openclip", 25.0, 3000, 2)]
  line = compare_table(rows).splitlines()[-1]
  cells = [c.strip() for c in line.strip("|").split("|")]
  assert cells[4:10] == ["44.0", "25.0", "**1.76x**", "3100", "4000", "**0.78x**"]
  assert cells[10] == "101"  # no roof recorded: GFLOP/s only


def test_table_reports_share_of_roof():
  rows = [row("ours", 40.0, 3000, 0, matmul_roof_gflop_per_s=200.0), row("openclip", 20.0, 4000, 0)]
  assert compare_table(rows).splitlines()[-1].endswith("| 100 (50%) |")
