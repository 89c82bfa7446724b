#!/usr/bin/env bash
# Regenerates the real-DVC fixtures under tests/data/dvc/ (see README.md there).
#
#   DVC=/tmp/dvcvenv/bin/dvc DVC2=/tmp/dvc2venv/bin/dvc tests/data/dvc/make_fixtures.sh
#
# DVC is a DVC 3 executable (required); DVC2 a DVC 2 one (optional: without it the dvc2/
# fixture is left as it is). Every project is built in a fresh `git init` directory under a
# temporary directory, reproduced by DVC itself, and then copied here without .git,
# .dvc/cache and .dvc/tmp. Nothing is downloaded: remotes are only configured, never used,
# and `dvc import` reads a local git repository.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DVC="${DVC:-dvc}"
DVC2="${DVC2:-}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

export DVC_NO_ANALYTICS=1 DVC_NO_UPDATE_CHECK=1 GIT_CONFIG_NOSYSTEM=1
export HOME="$WORK/home"  # no user-level git or DVC config leaks in
mkdir -p "$HOME"
# Fixed identities and dates make the git commits (and so `rev_lock` of dvc import) repeatable.
export GIT_AUTHOR_NAME=fixture GIT_AUTHOR_EMAIL=fixture@example.invalid
export GIT_COMMITTER_NAME=fixture GIT_COMMITTER_EMAIL=fixture@example.invalid
export GIT_AUTHOR_DATE="2026-01-01T00:00:00Z" GIT_COMMITTER_DATE="2026-01-01T00:00:00Z"

say() { printf '== %s\n' "$*" >&2; }

# copy_out SRC DEST: the project as committed here, without git, DVC's cache and tmp.
copy_out() {
  rm -rf "$2"
  mkdir -p "$2"
  (cd "$1" && tar --exclude=./.git --exclude=./.dvc/cache --exclude=./.dvc/tmp -cf - .) |
    (cd "$2" && tar -xf -)
}

# save_dir_objects PROJECT DEST: DVC's `.dir` listings from its cache, named <md5>.dir.
save_dir_objects() {
  mkdir -p "$2"
  find "$1/.dvc/cache" -name '*.dir' -type f | while read -r obj; do
    rel="${obj#"$1"/.dvc/cache/}"   # files/md5/ab/cdef….dir (DVC 3) or ab/cdef….dir (DVC 2)
    rel="${rel#files/md5/}"
    cp "$obj" "$2/${rel%%/*}${rel#*/}"
  done
}

# ---------------------------------------------------------------------------------------------
say "basic: DVC $("$DVC" --version)"
P="$WORK/basic"
mkdir -p "$P" && cd "$P"
git init -q .
"$DVC" init -q

mkdir -p scripts config data/images/sub reports
cat > params.yaml <<'EOF'
prepare:
  split: 0.5
  seed: 7
featurize:
  max_features: 3
EOF
cat > train.yaml <<'EOF'
lr: 0.1
epochs: 2
EOF
cat > eval.yaml <<'EOF'
threshold: 0.5
mode: fast
EOF
cat > config/paths.yaml <<'EOF'
work_dir: work
report_dir: reports
EOF
cat > scripts/prepare.py <<'EOF'
import os, sys
src, dst, split, tag = sys.argv[1:]
rows = open(src, newline="").read().splitlines()
os.makedirs(os.path.dirname(dst), exist_ok=True)
with open(dst, "w") as f:
    for row in rows[: 1 + int(len(rows) * float(split))]:
        f.write(f"{row},{tag}\n")
EOF
cat > scripts/featurize.py <<'EOF'
import sys
lang, src, dst = sys.argv[1:]
with open(dst, "w") as f:
    for row in open(src).read().splitlines():
        f.write(f"{lang}:{row}\n")
EOF
cat > scripts/train.py <<'EOF'
import os, sys
name, units, out = sys.argv[1:]
os.makedirs(out, exist_ok=True)
open(os.path.join(out, "weights.txt"), "w").write(" ".join(["0.5"] * int(units)) + "\n")
open(os.path.join(out, "config.json"), "w").write('{"name": "%s", "units": %s}\n' % (name, units))
EOF
cat > scripts/evaluate.py <<'EOF'
import json, os, sys
model, split, out = sys.argv[1:]
units = len(open(os.path.join(model, "weights.txt")).read().split())
os.makedirs(os.path.dirname(out), exist_ok=True)
acc = 0.5 + units / 10 + (0.05 if split == "val" else 0.0)
json.dump({"acc": round(acc, 3), "loss": round(1 - acc, 3)}, open(out, "w"), sort_keys=True)
EOF
cat > scripts/report.py <<'EOF'
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
EOF
# data added with `dvc add`: a CRLF text file (DVC 3 hashes its raw bytes) and a directory.
printf 'id,value\r\n1,alpha\r\n2,beta\r\n3,gamma\r\n4,delta\r\n' > data/raw.csv
printf 'first image\n' > data/images/a.txt
printf '\x00\x01\x02binary\r\n' > data/images/b.bin
printf 'nested\r\nfile\r\n' > data/images/sub/c.txt
"$DVC" add -q data/raw.csv data/images

cat > dvc.yaml <<'EOF'
vars:
  - config/paths.yaml
  - tag: v1
    langs: [en, fr]

stages:
  prepare:
    desc: keep the first rows of the raw data
    cmd: python3 scripts/prepare.py data/raw.csv ${work_dir}/prepared.csv ${prepare.split} ${tag}
    deps:
      - scripts/prepare.py
      - data/raw.csv
    params:
      - prepare.split
      - prepare.seed
    outs:
      - ${work_dir}/prepared.csv

  featurize:
    foreach: ${langs}
    do:
      cmd: python3 scripts/featurize.py ${item} ${work_dir}/prepared.csv ${work_dir}/features-${item}.csv
      deps:
        - scripts/featurize.py
        - ${work_dir}/prepared.csv
      params:
        - featurize.max_features
      outs:
        - ${work_dir}/features-${item}.csv

  train:
    foreach:
      small:
        units: 2
      large:
        units: 4
    do:
      cmd: python3 scripts/train.py ${key} ${item.units} models/${key}
      deps:
        - scripts/train.py
        - ${work_dir}/features-en.csv
        - ${work_dir}/features-fr.csv
        - data/images
      params:
        - train.yaml:
            - lr
            - epochs
      outs:
        - models/${key}

  evaluate:
    matrix:
      model: [small, large]
      split: [val, test]
    cmd: python3 scripts/evaluate.py models/${item.model} ${item.split} eval/${item.model}-${item.split}.json
    deps:
      - scripts/evaluate.py
      - models/${item.model}
    params:
      - eval.yaml:
    metrics:
      - eval/${item.model}-${item.split}.json:
          cache: false

  report:
    wdir: ${report_dir}
    cmd:
      - python3 ../scripts/report.py ../eval summary loss.csv roc.csv
      - echo run >> history.log
    deps:
      - ../scripts/report.py
      - ../eval/small-val.json
      - ../eval/small-test.json
      - ../eval/large-val.json
      - ../eval/large-test.json
    outs:
      - summary
      - history.log:
          persist: true
    plots:
      - loss.csv:
          x: step
          y: loss
          cache: false
      - roc.csv:
          cache: false

  baseline:
    cmd: echo baseline > baseline.txt
    outs:
      - baseline.txt

  stamp:
    always_changed: true
    cmd: echo stamp > stamp.txt
    deps:
      - params.yaml
    outs:
      - stamp.txt:
          cache: false

metrics:
  - reports/summary/metrics.json

plots:
  - reports/summary/curve.csv
  - roc:
      x: fpr
      y:
        reports/roc.csv: tpr
      template: simple
EOF

"$DVC" repro >&2
"$DVC" freeze -q baseline

# Remotes of several schemes, written by `dvc remote` itself. Credentials: one in the committed
# config (as some users do) and the usual ones in .dvc/config.local; none may reach pivot.toml.
"$DVC" remote add -q -d storage ../dvc-storage
"$DVC" remote add -q s3store s3://example-bucket/dvc-cache
"$DVC" remote modify -q s3store endpointurl https://minio.example.invalid:9000
"$DVC" remote modify -q s3store region eu-west-1
"$DVC" remote add -q gcs gs://example-bucket/dvc
"$DVC" remote add -q cluster ssh://deploy@ssh.example.invalid/srv/dvc
"$DVC" remote modify -q cluster port 2222
"$DVC" remote add -q web https://dvc.example.invalid/store
"$DVC" remote modify -q web user reader
"$DVC" remote modify -q web password PW-IN-CONFIG-NOT-REAL
"$DVC" remote modify -q --local s3store access_key_id AKIAFIXTURENOTREAL00
"$DVC" remote modify -q --local s3store secret_access_key SECRET-IN-LOCAL-NOT-REAL
"$DVC" remote modify -q --local cluster password SSH-PW-NOT-REAL

"$DVC" status > "$WORK/status-clean.txt"
say "basic: dvc status after repro:"
cat "$WORK/status-clean.txt" >&2

copy_out "$P" "$HERE/basic"
save_dir_objects "$P" "$HERE/dir_objects"  # named by content: a rerun rewrites the same files

# What DVC says after one param edit (recorded for the import-dvc status test).
sed -i 's/^lr: 0.1$/lr: 0.2/' train.yaml
{
  echo "# edit: in train.yaml, lr: 0.1 -> 0.2 (nothing else changed)"
  echo "# \$ dvc status"
  "$DVC" status
} > "$HERE/expected_status_after_edit.txt"
"$DVC" status --json > "$HERE/expected_status_after_edit.json"
echo >> "$HERE/expected_status_after_edit.json"

# ---------------------------------------------------------------------------------------------
say "unconvertible"
S="$WORK/source-repo"   # the repository `dvc import` reads from
mkdir -p "$S" && cd "$S"
git init -q .
"$DVC" init -q
mkdir -p data
printf 'shared,1\n' > data/shared.csv
"$DVC" add -q data/shared.csv
git add -A && git commit -q -m "shared data"

U="$WORK/unconvertible"
mkdir -p "$U" && cd "$U"
git init -q .
"$DVC" init -q
"$DVC" remote add -q -d storage ../dvc-storage
mkdir -p data sub
# `dvc import` from another (local) git repository, and `dvc import-url` of a plain file.
"$DVC" import -q ../source-repo data/shared.csv -o data/shared.csv
printf 'external\n' > "$WORK/external.txt"
# (a path relative to the .dvc file's directory, so no path of this machine is recorded)
"$DVC" import-url -q ../../external.txt data/external.txt
cat > params.yaml <<'EOF'
train:
  lr: 0.1
  layers: [8, 4]
  verbose: true
EOF
cat > dvc.yaml <<'EOF'
stages:
  use:
    cmd: cat data/shared.csv > used.txt && echo side > side.txt
    deps:
      - data/shared.csv
    outs:
      - used.txt:
          push: false
      - side.txt:
          remote: storage
  args:
    cmd: echo ${train} > args.txt
    params:
      - train
    outs:
      - args.txt

artifacts:
  classifier:
    path: used.txt
    type: model
    desc: a model nobody trained
EOF
cat > sub/dvc.yaml <<'EOF'
stages:
  inner:
    cmd: echo inner > inner.txt
    outs:
      - inner.txt
EOF
"$DVC" repro >&2
"$DVC" repro sub/dvc.yaml >&2
copy_out "$U" "$HERE/unconvertible"

# ---------------------------------------------------------------------------------------------
if [ -n "$DVC2" ]; then
  say "dvc2: DVC $("$DVC2" --version)"
  D="$WORK/dvc2"
  mkdir -p "$D" && cd "$D"
  git init -q .
  "$DVC2" init -q
  mkdir -p data/dir
  printf 'a,b\r\n1,2\r\n' > data/crlf.csv
  printf 'one\r\ntwo\r\n' > data/dir/text.txt
  printf '\x00\x01\r\n' > data/dir/binary.bin
  "$DVC2" add -q data/crlf.csv data/dir
  cat > dvc.yaml <<'EOF'
stages:
  copy:
    cmd: cp data/crlf.csv out.csv && mkdir -p outdir && cp data/dir/text.txt outdir/t.txt
    deps:
      - data/crlf.csv
      - data/dir
    outs:
      - out.csv
      - outdir
EOF
  "$DVC2" repro >&2
  copy_out "$D" "$HERE/dvc2"
  save_dir_objects "$D" "$HERE/dir_objects"
fi

say "done"
