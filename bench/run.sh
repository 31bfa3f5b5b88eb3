#!/usr/bin/env bash
# Benchmarks of `r2a-image build` on the reference cluster (all seven roles):
#   cold       empty cache: bootstrap, every role layer, every image
#   warm       nothing changed: every layer and image reused
#   overlay    one overlay file of one role changed: that role's image rebuilt
# and the peak memory (max RSS) of r2a-image itself during the cold build.
# Run as root from the repository root: `make bench`.
set -euo pipefail
cd "$(dirname "$0")/.."

work=target/bench
image=target/release/r2a-image
manifest=examples/reference-cluster.toml
rm -rf "$work"
mkdir -p "$work"
cp -a roles overlays "$work/"

timed() { # name, then the command; prints seconds and max RSS (KiB)
  local name=$1; shift
  local start end
  start=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$work/$name.rss" "$@" >"$work/$name.log" 2>&1 || { tail -20 "$work/$name.log"; exit 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc >"$work/$name.seconds"
}

build=("$image" --data "$work" build "$manifest" --out "$work/out" --cache "$work/cache")

timed cold "${build[@]}"
timed warm "${build[@]}"
mkdir -p "$work/overlays/portal/etc"
date +%s%N >"$work/overlays/portal/etc/r2a-bench-stamp"
timed overlay "${build[@]}"

cold=$(cat "$work/cold.seconds"); warm=$(cat "$work/warm.seconds"); overlay=$(cat "$work/overlay.seconds")
printf '%-34s %10s\n' "benchmark" "result"
printf '%-34s %9.1fs\n' "cold build, 7 roles" "$cold"
printf '%-34s %9.1fs  (%.1f%% of cold; target < 5%%)\n' "warm rebuild, no change" "$warm" "$(echo "100 * $warm / $cold" | bc -l)"
printf '%-34s %9.1fs  (target < 10 s)\n' "overlay change to one role" "$overlay"
printf '%-34s %8d MB  (target < 200 MB)\n' "peak memory of r2a-image (cold)" "$(( $(cat "$work/cold.rss") / 1024 ))"
du -sh "$work"/out/*/*/rootfs.tar.gz | sed 's|'"$work"'/out/||'
