"""report: per-group statistics as Markdown, and a metrics file."""

import csv
import json
import os
import statistics
import sys

clean_dir, report_path, metrics_path = sys.argv[1:4]
lines = ["# Report", "", "| group | rows | mean | max |", "|---|---|---|---|"]
metrics = {}
for name in sorted(os.listdir(clean_dir)):
    with open(os.path.join(clean_dir, name), newline="") as handle:
        values = [float(row["value"]) for row in csv.DictReader(handle)]
    group = name.removeprefix("group-").removesuffix(".csv")
    mean = statistics.fmean(values)
    lines.append(f"| {group} | {len(values)} | {mean:.2f} | {max(values):.2f} |")
    metrics[group] = {"rows": len(values), "mean": round(mean, 4)}
with open(report_path, "w") as handle:
    handle.write("\n".join(lines) + "\n")
with open(metrics_path, "w") as handle:
    json.dump(metrics, handle, indent=2, sort_keys=True)
print(f"report for {len(metrics)} groups")
