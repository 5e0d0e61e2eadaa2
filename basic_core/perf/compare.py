"""Our train step and OpenCLIP's side by side, in the same three modes, and the table of the results.

The OpenCLIP side runs through the peer harness, which is not part of this repository: pass its venv's
python and its bench.py. Each side runs in its own process per mode and round, the two alternating
(odd rounds run OpenCLIP first), so a slow spell of the machine hits both.

    python -m basic_core.bench compare --peer-python PY --peer-script ../shared/bench/openclip_peer/bench.py
    python -m basic_core.bench compare-table paper_figures/data/compare_openclip.jsonl
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from collections.abc import Iterator

from basic_core.perf import throughput


def peer_command(settings: throughput.Settings, name: str, peer_python: str, peer_script: str) -> list[str]:
  """The peer harness's command for mode `name`: the same global batch, K and recomputation as ours."""
  k, remat = throughput.MODES[name]
  batch = throughput.mode_config(settings, name).train.batch_size
  cmd = [peer_python, peer_script, "--batch", str(batch), "--steps", str(settings.steps), "--warmup",
         str(settings.warmup), "--threads", str(os.cpu_count()), "--max-steps", str(settings.max_steps),
         "--accum-freq", str(k)]
  return cmd + (["--grad-checkpointing"] if remat == "full" else [])


def side_by_side(settings: throughput.Settings, modes, *, rounds: int, peer_python: str, peer_script: str,
                 warmup: int | None = None) -> Iterator[dict]:
  """Rows of both sides, per round and mode, as they are measured.

  Plain times `settings.steps` steps after 2 warm-up steps, the accumulating modes 2 fewer after 1
  (they are K times longer); `warmup` overrides both warm-ups.
  """
  for round_ in range(rounds):
    for name in modes:
      steps, default_warmup = (settings.steps, 2) if name == "plain" else (max(settings.steps - 2, 2), 1)
      s = dataclasses.replace(settings, steps=steps, warmup=default_warmup if warmup is None else warmup)
      sides = [("ours", throughput.command(s, name)),
               ("openclip", peer_command(s, name, peer_python, peer_script))]
      for side, cmd in sides if round_ % 2 == 0 else sides[::-1]:
        row = {**throughput.run_json(cmd), "name": name, "side": side, "round": round_}
        row.setdefault("microbatch", row.get("micro_batch"))  # the peer's name for it
        yield row


def summary(row: dict) -> str:
  """One side of one round as a line of text."""
  return (f"round {row['round']} {row['name']:<17} {row['side']:<9} {row['samples_per_s']:7.1f} samples/s  "
          f"RSS {row['peak_rss_mb']:6.0f} MB{'  (contended)' if row.get('contended') else ''}")


def table(rows: list[dict]) -> str:
  """Markdown: per mode, median samples/s and max peak RSS of each side over rounds, and the ratios.

  Our executed GFLOP/s is the median over rounds, and its share of the float32 matmul roof measured in
  the same process (`matmul_roof_gflop_per_s`) where the rows carry one.
  """
  lines = ["| mode | batch | microbatch x K | ours: remat | ours samples/s | OpenCLIP samples/s "
           "| speed ratio | ours peak RSS MB | OpenCLIP peak RSS MB | RSS ratio | ours GFLOP/s (of roof) |",
           "|---" * 11 + "|"]
  for name in dict.fromkeys(r["name"] for r in rows):
    ours = [r for r in rows if r["name"] == name and r["side"] == "ours"]
    peer = [r for r in rows if r["name"] == name and r["side"] == "openclip"]
    if not (ours and peer):
      continue
    speed = [statistics.median(r["samples_per_s"] for r in side) for side in (ours, peer)]
    rss = [max(r["peak_rss_mb"] for r in side) for side in (ours, peer)]
    k = ours[0]["batch"] // ours[0]["microbatch"]
    flops = f"{statistics.median(r['hw_gflop_per_s'] for r in ours):.0f}"
    if all("matmul_roof_gflop_per_s" in r for r in ours):
      flops += f" ({statistics.median(r['hw_gflop_per_s'] / r['matmul_roof_gflop_per_s'] for r in ours):.0%})"
    lines.append(f"| {name} | {ours[0]['batch']} | {ours[0]['microbatch']} x {k} | {ours[0]['remat']} "
                 f"| {speed[0]:.1f} | {speed[1]:.1f} | **{speed[0] / speed[1]:.2f}x** | {rss[0]:.0f} "
                 f"| {rss[1]:.0f} | **{rss[0] / rss[1]:.2f}x** | {flops} |")
  return "\n".join(lines)
