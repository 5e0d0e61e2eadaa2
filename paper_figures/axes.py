"""The batch-size axis of every figure: log base 2, one labelled tick per batch size that was run."""


def log2_batch_axis(ax, batch_sizes) -> None:
  """Log-2 x axis ticked at `batch_sizes` only (matplotlib's own minor tick labels overlap them)."""
  sizes = sorted({int(b) for b in batch_sizes})
  ax.set_xscale("log", base=2)
  ax.set_xticks(sizes, [str(b) for b in sizes])
  ax.minorticks_off()
  ax.grid(alpha=0.3)
