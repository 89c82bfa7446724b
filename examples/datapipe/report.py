"""report: per-group statistics as Markdown, a metrics file, and a curve to plot.

The curve: how far the running mean of the kept values (in id order, 20 steps) is from the
final mean, relative to it: `pivotbuild plots diff` overlays it across commits."""

import csv
import json
import os
import statistics
import sys

clean_dir, report_path, metrics_path, curve_path = sys.argv[1:5]
lines = ["# Report", "", "| group | rows | mean | max |", "|---|---|---|---|"]
metrics = {}
rows = []
for name in sorted(os.listdir(clean_dir)):
    with open(os.path.join(clean_dir, name), newline="") as handle:
        kept = [(int(row["id"]), float(row["value"])) for row in csv.DictReader(handle)]
    rows.extend(kept)
    values = [value for _, value in kept]
    group = name.removeprefix("group-").removesuffix(".csv")
    mean = statistics.fmean(values)
    lines.append(f"| {group} | {len(values)} | {mean:.2f} | {max(values):.2f} |")
    metrics[group] = {"rows": len(values), "mean": round(mean, 4)}
with open(report_path, "w") as handle:
    handle.write("\n".join(lines) + "\n")
rows.sort()
final = statistics.fmean(value for _, value in rows)
with open(curve_path, "w", newline="") as handle:
    writer = csv.writer(handle)
    writer.writerow(["step", "loss"])
    for step in range(1, 21):
        seen = [value for _, value in rows[: max(1, len(rows) * step // 20)]]
        writer.writerow([step, f"{abs(statistics.fmean(seen) - final) / final:.6f}"])
metrics["total"] = {"rows": len(rows), "mean": round(final, 4)}
with open(metrics_path, "w") as handle:
    json.dump(metrics, handle, indent=2, sort_keys=True)
print(f"report for {len(rows)} rows in {len(metrics) - 1} groups")
