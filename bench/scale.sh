#!/usr/bin/env bash
# Fleet scale: `check`, `plan`, `render --node` and `seed --all` on examples/fleet.toml (3 db,
# 6 fs, 4 application and N telephony nodes on a /16, the telephony nodes as one range), for N of
# 10, 100, 1,000 and 5,000: the time and peak memory (max RSS) of each command. The first
# render issues every node's certificate and is shown apart; the others run as they do
# for a user after that, with the certificates to check. Targets at 1,000: check and
# plan under 1 s, render under 0.5 s, seed --all under 10 s, each under 100 MB, and the
# cost growing linearly with N. Run from the repository root; bench/run.sh calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${IMAGE:-target/release/r2a-image}
work=target/bench-scale
rm -rf "$work"
mkdir -p "$work"

fleet() { # telephony node count: examples/fleet.toml with its range grown or shrunk
  sed "s/tele-node-\[0001-1000\]/tele-node-[0001-$(printf %04d "$1")]/" examples/fleet.toml
}

measured() { # label, then the command: appends "seconds MB" to the row
  local label=$1; shift
  /usr/bin/time -f '%e %M' -o "$work/$label.time" "$@" >"$work/$label.log" 2>&1 ||
    { tail -20 "$work/$label.log"; exit 1; }
  read -r seconds rss <"$work/$label.time"
  printf ' %7.2fs %4d MB' "$seconds" $((rss / 1024))
}

printf '%-7s %17s %17s %17s %17s %17s\n' nodes "render (first)" check plan render "seed --all"
for count in 10 100 1000 5000; do
  dir=$work/$count
  mkdir -p "$dir"
  fleet "$count" >"$dir/fleet.toml"
  printf '%-7d' $((count + 13))
  measured "render-first-$count" "$image" render "$dir/fleet.toml" --node tele-node-0001 --out "$dir/render-first"
  measured "check-$count" "$image" check "$dir/fleet.toml"
  measured "plan-$count" "$image" plan "$dir/fleet.toml" --cache "$dir/cache"
  measured "render-$count" "$image" render "$dir/fleet.toml" --node tele-node-0001 --out "$dir/render"
  measured "seed-$count" "$image" --quiet seed "$dir/fleet.toml" --all --out "$dir/out"
  echo
  rm -rf "$dir/out"
done
