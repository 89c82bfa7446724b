"""transform: drop small values, scale the rest, one file per group."""

import csv
import os
import sys
import tomllib
from collections import defaultdict

params = tomllib.load(open("params.toml", "rb"))["transform"]
source, out_dir = sys.argv[1], sys.argv[2]
groups: dict[str, list[tuple[str, float]]] = defaultdict(list)
with open(source, newline="") as handle:
    for row in csv.DictReader(handle):
        value = float(row["value"])
        if value >= params["threshold"]:
            groups[row["group"]].append((row["id"], value * params["scale"]))
os.makedirs(out_dir, exist_ok=True)
for group, rows in sorted(groups.items()):
    with open(os.path.join(out_dir, f"group-{group}.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "value"])
        writer.writerows((i, f"{v:.4f}") for i, v in rows)
print(f"kept {sum(map(len, groups.values()))} rows in {len(groups)} groups")
