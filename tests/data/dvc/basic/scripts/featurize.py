import sys
lang, src, dst = sys.argv[1:]
with open(dst, "w") as f:
    for row in open(src).read().splitlines():
        f.write(f"{lang}:{row}\n")
