#!/usr/bin/env bash
# Fleet scale: `check`, `plan`, `render --node` and `seed --all` on fleets of 3 db, 6 fs,
# 4 application and N telephony nodes on a /16 (the telephony nodes as one range), for N of
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

fleet() { # telephony node count
  cat <<EOF
vendor = "skip"

[cluster]
name = "fleet"
domain = "fleet.example.com"

[network]
cidr = "10.77.0.0/16"
gateway = "10.77.0.1"
dns = ["10.77.0.1"]

[ssh]
authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ8c0uD2Xb5wq4Yk0qY8pY3n1m4rZxP2w6b3l9s7u1aB ops@fleet"]
EOF
  local role i=0
  for role in db db db fs fs fs fs fs fs admin portal switchboard api; do
    i=$((i + 1))
    printf '\n[[nodes]]\nname = "%s-%02d"\nrole = "%s"\naddress = "10.77.0.%d"\n' "$role" "$i" "$role" $((10 + i))
  done
  printf '\n[[nodes]]\nname = "tele-node-[00001-%05d]"\nrole = "telephony"\naddress = "10.77.1.0"\n' "$1"
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
  measured "render-first-$count" "$image" render "$dir/fleet.toml" --node tele-node-00001 --out "$dir/render-first"
  measured "check-$count" "$image" check "$dir/fleet.toml"
  measured "plan-$count" "$image" plan "$dir/fleet.toml" --cache "$dir/cache"
  measured "render-$count" "$image" render "$dir/fleet.toml" --node tele-node-00001 --out "$dir/render"
  measured "seed-$count" "$image" --quiet seed "$dir/fleet.toml" --all --out "$dir/out"
  echo
  rm -rf "$dir/out"
done
