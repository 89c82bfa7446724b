import os, sys
name, units, out = sys.argv[1:]
os.makedirs(out, exist_ok=True)
open(os.path.join(out, "weights.txt"), "w").write(" ".join(["0.5"] * int(units)) + "\n")
open(os.path.join(out, "config.json"), "w").write('{"name": "%s", "units": %s}\n' % (name, units))
