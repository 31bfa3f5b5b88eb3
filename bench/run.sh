#!/usr/bin/env bash
# First the fleet scale of the manifest commands (bench/scale.sh: check, plan, render and
# seed --all at 10 to 5,000 nodes); then benchmarks of `r2a-image build` on the reference
# cluster (all seven roles):
#   cold       empty cache: bootstrap, every role layer, every image
#   floor      the union of every role's packages in one mmdebstrap run, beside the cold
#              build's trees (base and role layers) as a ratio
#   warm       nothing changed: every layer and image reused
#   overlay    one overlay file of one role changed: that role's image rebuilt
# and the peak memory (max RSS) of r2a-image itself during the cold build; then, for one
# role (portal) of a small cluster on the test network:
#   formats    time from the warm role layer to each artifact (raw, qcow2, iso, pxe), and
#              each artifact's size
#   boot       the qcow2 booted in QEMU under TCG (`r2a-image boot --check`): seconds from
#              the kernel's start to r2a-firstboot.service done, and the whole run
# and the boot matrix of the reference cluster (tests/matrix.rs): each node booted under
# TCG, seconds from the kernel's start to r2a-firstboot.service done, and the whole run;
# then the db cluster in the cluster harness (bench/cluster.sh): formation, failover under
# writes, memory per container; the fs and telephony joins (bench/pools.sh): volume
# started, a telephony node registered, the whole topology healthy, heal after an fs
# node's restart; last the three db images booted together in QEMU (tests/qemu_cluster.rs).
# Run as root from the repository root: `make bench`.
set -euo pipefail
cd "$(dirname "$0")/.."

work=target/bench
image=target/release/r2a-image
manifest=examples/reference-cluster.toml
rm -rf "$work"
mkdir -p "$work"
cp -a roles overlays "$work/"

bench/scale.sh
echo

timed() { # name, then the command; prints seconds and max RSS (KiB)
  local name=$1; shift
  local start end
  start=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$work/$name.rss" "$@" >"$work/$name.log" 2>&1 || { tail -20 "$work/$name.log"; exit 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc >"$work/$name.seconds"
}

# The tarball only: these three measure layers and caches (the bootable formats follow).
build=("$image" --data "$work" build "$manifest" --format tar --out "$work/out" --cache "$work/cache")

timed cold "${build[@]}"
# The floor: every role's Debian packages (and the base's) installed by one mmdebstrap run
# into one tree, from the same mirror with nothing downloaded yet, as the cold build was.
union=$("$image" --data "$work" plan --json "$manifest" | python3 -c '
import json, sys
plan = json.load(sys.stdin)
packages = set(plan["base"]["packages"])
for role in plan["roles"]:
    packages.update(role["layer"]["packages"])
print(",".join(sorted(packages)))')
# The reference manifest's sources, as its build's apt sees them.
sources=("deb http://deb.debian.org/debian trixie main"
         "deb http://deb.debian.org/debian trixie-updates main"
         "deb http://deb.debian.org/debian-security trixie-security main")
# dpkg skips its fsync per file there as the build does.
timed floor unshare --mount --pid --fork --kill-child mmdebstrap --mode=root --variant=minbase \
  --format=directory --aptopt='APT::Install-Recommends "false"' --dpkgopt=force-unsafe-io \
  --include="$union" trixie "$work/floor" "${sources[@]}"
rm -rf "$work/floor"
timed warm "${build[@]}"
mkdir -p "$work/overlays/portal/etc"
date +%s%N >"$work/overlays/portal/etc/r2a-bench-stamp"
timed overlay "${build[@]}"

cold=$(cat "$work/cold.seconds"); warm=$(cat "$work/warm.seconds"); overlay=$(cat "$work/overlay.seconds")
printf '%-34s %10s\n' "benchmark" "result"
floor=$(cat "$work/floor.seconds")
# The trees of the cold build: its base layer, then the role package layers (made side by
# side within one stage), one after the other, so the two stages' times add up to the time
# the trees took.
trees=$(sed -n 's/^r2a-image: \(base layer [0-9a-f]*\|package layers\) done in \([0-9.]*\)s.*/\2/p' \
  "$work/cold.log" | paste -sd+ | bc)
printf '%-34s %9.1fs\n' "cold build, 7 roles" "$cold"
printf '%-34s %9.1fs\n' "floor: the union, one mmdebstrap" "$floor"
printf '%-34s %9.1fs  (%.2f x the floor; target <= 1.5; the whole build %.2f x)\n' \
  "cold trees: base + role layers" "$trees" "$(echo "$trees / $floor" | bc -l)" \
  "$(echo "$cold / $floor" | bc -l)"
printf '%-34s %9.1fs  (%.1f%% of cold; target < 5%%)\n' "warm rebuild, no change" "$warm" "$(echo "100 * $warm / $cold" | bc -l)"
printf '%-34s %9.1fs  (target < 10 s)\n' "overlay change to one role" "$overlay"
printf '%-34s %8d MB  (target < 200 MB)\n' "peak memory of r2a-image (cold)" "$(( $(cat "$work/cold.rss") / 1024 ))"
du -sh "$work"/out/*/*/rootfs.tar.gz | sed 's|'"$work"'/out/||'

# Formats and a boot, for the portal role of a small cluster (its layers are warm now).
formats_manifest=bench/formats-cluster.toml
for format in raw qcow2 iso pxe; do
  timed "format-$format" "$image" --data "$work" build "$formats_manifest" --role portal \
    --format "$format" --out "$work/formats-$format" --cache "$work/cache"
done
timed boot "$image" --data "$work" boot "$formats_manifest" --role portal --format qcow2 \
  --firmware uefi --accel tcg --check --out "$work/formats-qcow2"
firstboot=$(grep -o '"firstboot_done_seconds":[0-9.]*' "$work/boot.log" | cut -d: -f2)
echo
printf '%-34s %10s %12s %12s\n' "portal role, from a warm layer" "time" "size" "peak RSS"
for format in raw qcow2 iso pxe; do
  artifact=$(find "$work/formats-$format/r2a-bench/portal" -mindepth 1 -maxdepth 1 \( -name 'disk.*' -o -name '*.iso' -o -name pxe \))
  printf '%-34s %9.1fs %12s %9d MB\n' "$format" "$(cat "$work/format-$format.seconds")" \
    "$(du -sh --apparent-size "$artifact" | cut -f1)" "$(( $(cat "$work/format-$format.rss") / 1024 ))"
done
printf '%-34s %9.1fs  (r2a-firstboot done %.1f s after the kernel started)\n' \
  "qcow2 boot under TCG, UEFI" "$(cat "$work/boot.seconds")" "$firstboot"

# Trust: the portal role in every format at once, its SBOM, and `verify` of the result
# (the signature and every sum).
timed trust-build "$image" --data "$work" build "$formats_manifest" --role portal \
  --format tar --format raw --format qcow2 --format iso --format pxe \
  --out "$work/trust" --cache "$work/cache"
timed verify "$image" --data "$work" verify "$formats_manifest" --out "$work/trust"
timed verify-rebuild "$image" --data "$work" verify "$formats_manifest" --out "$work/trust" \
  --rebuild --cache "$work/cache"
sbom_time=$(sed -n 's/.*portal: sbom done in \([0-9.]*\)s.*/\1/p' "$work/trust-build.log")
echo
printf '%-34s %10s\n' "portal role, every format" "result"
printf '%-34s %9.1fs  (%s)\n' "SBOM written" "$sbom_time" \
  "$(du -h --apparent-size "$work/trust/r2a-bench/portal/sbom.spdx.json" | cut -f1)"
printf '%-34s %9.1fs  (%s checked)\n' "verify: signature and every sum" "$(cat "$work/verify.seconds")" \
  "$(du -sh --apparent-size "$work/trust/r2a-bench" | cut -f1)"
printf '%-34s %9.1fs  (%s of %s artifacts the same bytes, peak RSS %d MB)\n' "verify --rebuild" \
  "$(cat "$work/verify-rebuild.seconds")" "$(grep -c 'same bytes on rebuild' "$work/verify-rebuild.log")" \
  "$(grep -c 'on rebuild' "$work/verify-rebuild.log")" "$(( $(cat "$work/verify-rebuild.rss") / 1024 ))"

# The boot matrix of the reference cluster: each role in the format its node boots from.
matrix_out="$work/matrix"
for spec in db:qcow2 fs:raw api:iso telephony:pxe portal:pxe; do
  "$image" --data "$work" build "$manifest" --role "${spec%%:*}" --format "${spec#*:}" \
    --out "$matrix_out" --cache "$work/cache" >"$work/matrix-build-${spec%%:*}.log" 2>&1 \
    || { tail -20 "$work/matrix-build-${spec%%:*}.log"; exit 1; }
done
echo
printf '%-50s %14s %10s\n' "reference cluster boot matrix, TCG" "firstboot done" "whole run"
matrix=(
  "pg-node-02 db qcow2 UEFI|--role db --node pg-node-02 --format qcow2 --firmware uefi"
  "fs-node-01 fs raw BIOS|--role fs --node fs-node-01 --format raw --firmware bios"
  "api-node-01 api ISO live BIOS|--role api --node api-node-01 --format iso --firmware bios"
  "tele-node-01 telephony PXE iPXE UEFI|--role telephony --node tele-node-01 --format pxe --firmware uefi --memory 3072"
  "portal-node-01 portal PXE GRUB BIOS|--role portal --node portal-node-01 --format pxe --pxe-loader grub --firmware bios --memory 3072"
)
for entry in "${matrix[@]}"; do
  name=${entry%%|*}
  read -r -a args <<<"${entry#*|}"
  key=matrix-boot-${name%% *}
  timed "$key" "$image" --data "$work" boot "$manifest" "${args[@]}" --accel tcg --check --out "$matrix_out"
  done_at=$(grep -o '"firstboot_done_seconds":[0-9.]*' "$work/$key.log" | cut -d: -f2)
  printf '%-50s %13.1fs %9.1fs\n' "$name" "$done_at" "$(cat "$work/$key.seconds")"
done

# The db cluster in the cluster harness: formation, failovers, memory (bench/cluster.sh).
bench/cluster.sh "$work"

# The fs and telephony joins: volume, registration, the whole topology, heal
# (bench/pools.sh).
bench/pools.sh "$work"

# The db role's qcow2 booted as db1-db3 in QEMU under TCG on a private bridge
# (tests/qemu_cluster.rs, which prints its figures): seconds from the machines' start to
# all three booted, and to a Patroni leader with two streaming replicas.
cargo test --release --locked --test qemu_cluster -- --nocapture >"$work/qemu-cluster.log" 2>&1 \
  || { tail -40 "$work/qemu-cluster.log"; exit 1; }
echo
printf '%-50s %s\n' "three db machines in QEMU, TCG" "seconds from start"
booted=$(sed -n 's/^the three machines booted \([0-9.]*\) s after.*/\1/p' "$work/qemu-cluster.log")
formed=$(sed -n 's/^a Patroni leader with two replicas \([0-9.]*\) s after.*/\1/p' "$work/qemu-cluster.log")
printf '%-50s %.1f s\n' "all three booted (boot report)" "$booted"
printf '%-50s %.1f s\n' "Patroni leader with two streaming replicas" "$formed"

# Last, `cache prune` of the cache these benchmarks leave: every layer the reference
# cluster does not use, and the gzip members no kept build used.
timed prune "$image" --data "$work" cache prune "$manifest" --cache "$work/cache" --keep 0
echo
printf '%-50s %.1f s  (%s)\n' "cache prune --keep 0" "$(cat "$work/prune.seconds")" "$(tail -1 "$work/prune.log")"
