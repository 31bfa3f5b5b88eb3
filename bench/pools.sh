#!/usr/bin/env bash
# Benchmark of the fs and telephony joins in the cluster harness (`r2a-image cluster`),
# on the whole topology of bench/formats-cluster.toml (3 db, 3 fs, admin, portal,
# switchboard, api, 2 telephony):
#   volume      seconds from `cluster up` of every node to the shared volume started
#               (every fs node's gluster step done)
#   registered  seconds from the same `cluster up` to tel1 active in the telephony pool
#               (after its shared-volume step, which waits for the volume)
#   healthy     seconds from the same `cluster up` to the whole topology healthy: every
#               node running, systemd saying `running`, every join step done
#   heal        fs2 stopped, 100 files of 64 KiB written through tel1's mount, fs2
#               started: seconds from its start to no heal entry left on any brick
# Called by bench/run.sh with its work folder, or alone: `bench/pools.sh [WORK]`.
set -euo pipefail
cd "$(dirname "$0")/.."

work=${1:-target/bench}
image=target/release/r2a-image
manifest=bench/formats-cluster.toml
out="$work/pools-out"
state="$work/pools-state"
mkdir -p "$work"
[ -d "$work/roles" ] || cp -a roles overlays "$work/"
cluster=("$image" --data "$work" cluster "$manifest" --out "$out" --state "$state")

"$image" --data "$work" build "$manifest" --format tar \
  --out "$out" --cache "$work/cache" >"$work/pools-build.log" 2>&1 \
  || { tail -20 "$work/pools-build.log"; exit 1; }
"${cluster[@]}" down >/dev/null
trap '"${cluster[@]}" down >/dev/null' EXIT

step_done() { # node, step: the agent's join step is done
  "${cluster[@]}" exec "$1" -- r2a-node status --json 2>/dev/null \
    | python3 -c 'import json,sys; s=[x for x in json.load(sys.stdin)["join"] if x["step"]==sys.argv[1]]; sys.exit(0 if s and s[0]["state"]=="done" else 1)' "$2"
}
volume_started() { step_done fs1 gluster && step_done fs2 gluster && step_done fs3 gluster; }
topology_healthy() {
  "${cluster[@]}" status --json 2>/dev/null | python3 -c '
import json, sys
nodes = json.load(sys.stdin)["nodes"]
def healthy(n):
    agent = n.get("agent", {}).get("available", {}).get("value", {})
    return n["running"] and n["system"] == "running" and "join" in agent \
        and all(s["state"] == "done" for s in agent["join"])
sys.exit(0 if len(nodes) == 12 and all(healthy(n) for n in nodes) else 1)'
}
heal_done() {
  "${cluster[@]}" exec fs1 -- gluster volume heal shared info summary 2>/dev/null \
    | awk '/Status: Connected/ {c++} /Total Number of entries:/ {n += $NF} END {exit !(c == 3 && n == 0)}'
}
since() { echo "$(date +%s.%N) - $1" | bc; }
wait_for() { # seconds, then a command
  local limit=$1; shift
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "gave up waiting for: $*" >&2; exit 1; }
    sleep 0.5
  done
}

start=$(date +%s.%N)
"${cluster[@]}" up >/dev/null
volume=""; registered=""; healthy=""
deadline=$((SECONDS + 900))
until [ -n "$volume" ] && [ -n "$registered" ] && [ -n "$healthy" ]; do
  [ $SECONDS -lt $deadline ] || { echo "gave up waiting for the volume, tel1 and the topology" >&2; exit 1; }
  [ -n "$volume" ] || { volume_started && volume=$(since "$start"); } || true
  [ -n "$registered" ] || { step_done tel1 telephony-pool && registered=$(since "$start"); } || true
  [ -n "$healthy" ] || { topology_healthy && healthy=$(since "$start"); } || true
  sleep 0.5
done

"${cluster[@]}" stop fs2 >/dev/null
"${cluster[@]}" exec tel1 -- sh -c 'for i in $(seq 1 100); do
  dd if=/dev/urandom of=/srv/shared/heal-$i.bin bs=64k count=1 status=none conv=fsync; done'
healing=$(date +%s.%N)
"${cluster[@]}" start fs2 >/dev/null
wait_for 600 heal_done
heal=$(since "$healing")

echo
printf '%-34s %s\n' "fs and telephony in the harness" "result"
printf '%-34s %.1f s\n' "cluster up to volume started" "$volume"
printf '%-34s %.1f s\n' "cluster up to tel1 registered" "$registered"
printf '%-34s %.1f s\n' "cluster up to the topology healthy" "$healthy"
printf '%-34s %.1f s\n' "heal of 100 files after a restart" "$heal"
