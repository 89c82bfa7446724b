import json, os, sys
model, split, out = sys.argv[1:]
units = len(open(os.path.join(model, "weights.txt")).read().split())
os.makedirs(os.path.dirname(out), exist_ok=True)
acc = 0.5 + units / 10 + (0.05 if split == "val" else 0.0)
json.dump({"acc": round(acc, 3), "loss": round(1 - acc, 3)}, open(out, "w"), sort_keys=True)
