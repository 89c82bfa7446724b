#!/bin/bash
# One timed push or pull of the 100,000-file tree, reset the way compare_remote.py resets
# before each run: what the last run wrote is deleted, the file system synced, the page
# cache dropped (run as root), what the command reads read back. For trying a change
# quickly; compare_remote.py gives the numbers that count.
#
#   benchmarks/remote_once.sh push|pull [PIVOTBUILD]   (default: pivotbuild on PATH)
#
# Uses the projects compare_remote.py set up under bench-data/remote-bench/s100000
# (run it once first, with --keep or not); a pull needs a full remote-pb/ (push first).
# Never while compare_remote.py runs: both use remote-pb/ and clone-pb/.
# Prints the command's last line, then wall seconds and the whole machine's busy CPU seconds.
set -euo pipefail
verb=${1:?push or pull}
pb=${2:-pivotbuild}
work=$(cd "$(dirname "$0")/.." && pwd)/bench-data/remote-bench/s100000
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }
case $verb in
  push) rm -rf "$work/remote-pb"; dir=$work/pb ;;
  pull) rm -rf "$work/clone-pb"; dir=$work/clone-pb ;;
  *) echo "usage: $0 push|pull [PIVOTBUILD]" >&2; exit 2 ;;
esac
sync
echo 1 > /proc/sys/vm/drop_caches
sleep 2
if [ "$verb" = push ]; then
  mkdir "$work/remote-pb"
  find "$work/pb/.pivotbuild/cache/files" -type f -print0 | xargs -0 cat > /dev/null
else
  mkdir -p "$dir/.pivotbuild"
  cp "$work/pb/pivot.toml" "$dir/"
  cp -r "$work/pb/.pivotbuild/locks" "$dir/.pivotbuild/"
  find "$work/remote-pb" -type f -print0 | xargs -0 cat > /dev/null
fi
"$pb" --version > /dev/null
hz=$(getconf CLK_TCK)
b0=$(busy); t0=$(date +%s.%N)
(cd "$dir" && "$pb" "$verb" 2>&1 | tail -1)
t1=$(date +%s.%N); b1=$(busy)
python3 -c "print(f'wall {$t1 - $t0:.2f} s, busy CPU {($b1 - $b0) / $hz:.2f} s')"
