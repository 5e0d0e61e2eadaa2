"""Compiled memory of the train step vs the contrastive batch, drawn from `bench memory` rows.

    python -m paper_figures.memory_figure --rows paper_figures/data/memory_tiny.jsonl \
        --out paper_figures/figures/memory_vs_batch.png

The rows are JSON lines of `python -m basic_core.bench memory --out ...` (XLA's memory analysis of the
naive and the accumulated step, with and without remat); one line per step and remat policy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis import cli  # noqa: E402
from paper_figures.axes import log2_batch_axis  # noqa: E402


def read_rows(path: str | Path) -> list[dict]:
  return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_memory(rows: list[dict], path: str | Path) -> None:
  """Compiled temp memory (log scale) vs contrastive batch N, one line per step and remat policy."""
  df = pd.DataFrame(rows)
  df["temp_MiB"] = df["temp_bytes"] / 2**20
  accumulated = "accumulate, microbatch " + df["microbatch"].astype(str)
  df["step"] = accumulated.where(df["mode"] != "naive", "naive (full batch)") + ", remat " + df["remat"]
  fig, ax = plt.subplots(figsize=(7, 4.5))
  sns.lineplot(df, x="batch", y="temp_MiB", hue="step", marker="o", ax=ax)
  ax.set(yscale="log", xlabel="contrastive batch size N",
         ylabel="compiled temp memory of the train step (MiB)",
         title="Train-step memory vs contrastive batch (XLA memory analysis)")
  log2_batch_axis(ax, df["batch"])
  fig.tight_layout()
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=150)
  plt.close(fig)


def main(argv: list[str] | None = None) -> int:
  parser = cli.Parser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument("--rows", required=True, type=cli.existing_file,
                      help="JSON lines of `bench memory --out`")
  parser.add_argument("--out", required=True, type=cli.out_file, help="the PNG to write")
  args = parser.parse_args(argv)
  with cli.blame("--rows"):
    rows = read_rows(args.rows)
    if not rows:
      raise ValueError(f"{args.rows} holds no rows")
    plot_memory(rows, args.out)
  return 0


if __name__ == "__main__":
  raise SystemExit(cli.run(main))
