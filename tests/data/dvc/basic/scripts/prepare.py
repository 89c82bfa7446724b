import os, sys
src, dst, split, tag = sys.argv[1:]
rows = open(src, newline="").read().splitlines()
os.makedirs(os.path.dirname(dst), exist_ok=True)
with open(dst, "w") as f:
    for row in rows[: 1 + int(len(rows) * float(split))]:
        f.write(f"{row},{tag}\n")
