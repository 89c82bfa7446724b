"""generate: a seeded synthetic data set of (id, group, value) rows."""

import csv
import random
import sys
import tomllib

params = tomllib.load(open("params.toml", "rb"))["generate"]
rng = random.Random(params["seed"])
out = sys.argv[1]
with open(out, "w", newline="") as handle:
    writer = csv.writer(handle)
    writer.writerow(["id", "group", "value"])
    for i in range(params["rows"]):
        writer.writerow([i, rng.choice("abcd"), f"{rng.random():.6f}"])
print(f"wrote {params['rows']} rows to {out}")
