import json, os, sys
eval_dir, summary, loss, roc = sys.argv[1:]
os.makedirs(summary, exist_ok=True)
scores = {}
for name in sorted(os.listdir(eval_dir)):
    scores[name[:-5]] = json.load(open(os.path.join(eval_dir, name)))["acc"]
json.dump({"best": max(scores.values()), "n": len(scores)},
          open(os.path.join(summary, "metrics.json"), "w"), sort_keys=True)
with open(os.path.join(summary, "curve.csv"), "w") as f:
    f.write("step,acc\n" + "".join(f"{i},{v}\n" for i, v in enumerate(scores.values())))
open(loss, "w").write("step,loss\n0,0.9\n1,0.5\n2,0.3\n")
open(roc, "w").write("fpr,tpr\n0.0,0.0\n0.5,0.8\n1.0,1.0\n")
