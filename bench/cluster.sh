#!/usr/bin/env bash
# Benchmark of the db cluster in the cluster harness (`r2a-image cluster`), on the small
# cluster of bench/formats-cluster.toml (3 db nodes and portal1 as the client):
#   formed     seconds from `cluster up` to every db join step done and a write through
#              portal1's HAProxy
#   failover   5 hard kills (SIGKILL of the container) and 5 clean stops of the Patroni
#              leader while portal1 commits one row per transaction through HAProxy:
#              seconds from the halt to the first commit after the last failed attempt
#              (median and maximum), and acknowledged rows missing on the new primary
#   memory     memory charged to each node's cgroup once the cluster is formed
# Called by bench/run.sh with its work folder, or alone: `bench/cluster.sh [WORK]`.
set -euo pipefail
cd "$(dirname "$0")/.."

work=${1:-target/bench}
image=target/release/r2a-image
manifest=bench/formats-cluster.toml
out="$work/cluster-out"
state="$work/cluster-state"
mkdir -p "$work"
[ -d "$work/roles" ] || cp -a roles overlays "$work/"
cluster=("$image" --data "$work" cluster "$manifest" --out "$out" --state "$state")

"$image" --data "$work" build "$manifest" --role db --role portal --format tar \
  --out "$out" --cache "$work/cache" >"$work/cluster-build.log" 2>&1 \
  || { tail -20 "$work/cluster-build.log"; exit 1; }
"${cluster[@]}" down >/dev/null
trap '"${cluster[@]}" down >/dev/null' EXIT

joined() { # every join step of db1..db3 done
  for node in db1 db2 db3; do
    "${cluster[@]}" exec "$node" -- r2a-node status --json 2>/dev/null \
      | python3 -c 'import json,sys; s=json.load(sys.stdin)["join"]; sys.exit(0 if s and all(x["state"]=="done" for x in s) else 1)' \
      || return 1
  done
}
sql() { # portal1, through HAProxy's primary port
  "${cluster[@]}" exec portal1 -- sh -c "set -a; . /etc/r2a/database.env; set +a; timeout 10 psql -X -At -c \"$1\""
}
leader() {
  for node in db1 db2 db3; do
    "${cluster[@]}" exec "$node" -- patronictl -c /etc/patroni/config.yml list -f json 2>/dev/null \
      | python3 -c 'import json,sys; l=[m["Member"] for m in json.load(sys.stdin) if m["Role"]=="Leader" and m["State"]=="running"]; print(l[0]) if l else sys.exit(1)' \
      && return 0
  done
  return 1
}
wait_for() { # seconds, then a command; fails when the time is up
  local limit=$1; shift
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "gave up waiting for: $*" >&2; return 1; }
    sleep 0.5
  done
}
diagnose() { # what each db node's Patroni says, before the trap takes the cluster down
  for node in db1 db2 db3; do
    echo "--- $node" >&2
    "${cluster[@]}" exec "$node" -- sh -c 'patronictl -c /etc/patroni/config.yml list;
      patronictl -c /etc/patroni/config.yml history; journalctl -u patroni -n 40 --no-pager' >&2 || true
  done
}

start=$(date +%s.%N)
"${cluster[@]}" up --nodes db1,db2,db3,portal1 >/dev/null
wait_for 300 joined
wait_for 60 sql "SELECT 1"
formed=$(echo "$(date +%s.%N) - $start" | bc)
sql "CREATE TABLE IF NOT EXISTS acked (id integer PRIMARY KEY)" >/dev/null

# Memory per container: the resident memory of every process in it (hosts with the
# memory controller on cgroup v1 have no per-container figure in the unified tree).
memory=()
for node in db1 db2 db3 portal1; do
  kib=$("${cluster[@]}" exec "$node" -- ps -e -o rss= | awk '{sum += $1} END {print sum + 0}')
  memory+=("$node $(( kib / 1024 )) MB")
done

# One failover: the writer runs in portal1 and prints `ok ID TIME` or `fail TIME`.
writer='set -a; . /etc/r2a/database.env; set +a; i=$1; rm -f /run/bench-stop
  export PGCONNECT_TIMEOUT=2
  while [ ! -e /run/bench-stop ]; do
    if timeout 10 psql -X -q -At -c "INSERT INTO acked (id) VALUES ($i)" >/dev/null 2>&1
    then echo "ok $i $(date +%s.%N)"; i=$((i+1)); else echo "fail $(date +%s.%N)"; sleep 0.2; fi
  done'
next=1
commits_after() { # time, log: at least 10 commits after the time
  [ "$(awk -v t="$1" '$1=="ok" && $3>t' "$2" | wc -l)" -ge 10 ]
}
failover() { # kill|stop; appends "seconds lost" to $work/failover-$1.txt
  local how=$1 old log halted
  old=$(leader)
  log="$work/writer.log"
  "${cluster[@]}" exec portal1 -- sh -c "$writer" sh "$next" >"$log" 2>&1 &
  local writer_pid=$!
  wait_for 30 grep -q "^ok" "$log"
  sleep 2
  halted=$(date +%s.%N)
  if [ "$how" = kill ]; then "${cluster[@]}" kill "$old" >/dev/null; else "${cluster[@]}" stop "$old" >/dev/null; fi
  wait_for 120 commits_after "$halted" "$log" || { diagnose; exit 1; }
  "${cluster[@]}" exec portal1 -- touch /run/bench-stop
  wait "$writer_pid" || true
  awk -v t="$halted" '$1=="fail" && $2>t {last=$2} $1=="ok" && $3>t && last && !back {back=$3}
    END {printf "%.1f\n", (last ? back - t : 0)}' "$log" >>"$work/failover-$how.txt"
  local acked stored missing
  acked=$(awk '$1=="ok" {print $2}' "$log" | sort -n)
  stored=$(sql "SELECT id FROM acked ORDER BY id")
  missing=$(comm -23 <(echo "$acked" | sort) <(echo "$stored" | sort) | grep -c . || true)
  echo "$missing" >>"$work/failover-lost.txt"
  next=$(( $(echo "$acked" | tail -1) + 1 ))
  "${cluster[@]}" start "$old" >/dev/null
  wait_for 300 joined
}
rm -f "$work"/failover-*.txt
for _ in 1 2 3 4 5; do failover kill; done
for _ in 1 2 3 4 5; do failover stop; done

stats() { sort -n "$1" | awk '{v[NR]=$1} END {m=(NR%2)?v[(NR+1)/2]:(v[NR/2]+v[NR/2+1])/2; printf "median %.1f s, max %.1f s", m, v[NR]}'; }
echo
printf '%-34s %s\n' "db cluster in the harness" "result"
printf '%-34s %.1f s\n' "cluster up to healthy" "$formed"
printf '%-34s %s  (targets: median <= 22 s, max < 30 s)\n' "failover, 5 hard kills" "$(stats "$work/failover-kill.txt")"
printf '%-34s %s  (target: median <= 5 s)\n' "failover, 5 clean stops" "$(stats "$work/failover-stop.txt")"
printf '%-34s %d  (target 0)\n' "acknowledged rows lost" "$(paste -sd+ "$work/failover-lost.txt" | bc)"
for line in "${memory[@]}"; do printf '%-34s %s\n' "memory of ${line%% *}" "${line#* }"; done
