#!/usr/bin/env bash
# Writes the golden images of the current image format into MAJOR.MINOR/ here (see README):
# golden.c, built static, checkpointed with the cr_checkpoint of target/release, as root.
#   single.crest      one process
#   tree.crest        a process and its two children
#   threads.crest     a process with four threads
#   compressed.crest  the tree, with page data compressed (--compress)
#   sharedfiles.crest (4.10 on) a process, its child and grandchild sharing one descriptor table
#   guards.crest      (4.11 on) a process with a guard region (MADV_GUARD_INSTALL, Linux 6.13)
#   incremental.crest and incremental-parent.crest (4.3 on)  `single` checkpointed with
#                     --track, then with --incremental (its parent named by absolute path;
#                     found beside it once the directory is elsewhere)
# Each process is started with an empty environment and killed once checkpointed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../.." && pwd)
bin=${CREST_BIN:-$root/target/release}
format=$root/crates/crest-image/src/format.rs
major=$(sed -n 's/^pub const FORMAT_MAJOR: u32 = \([0-9]*\);/\1/p' "$format")
minor=$(sed -n 's/^pub const FORMAT_MINOR: u32 = \([0-9]*\);/\1/p' "$format")
out=$here/$major.$minor
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cc -O2 -static -pthread -o "$work/golden" "$here/golden.c"

one() { # NAME MODE [cr_checkpoint options...]
    local name=$1 mode=$2
    shift 2
    rm -f "$work/ready"
    # Nothing of this shell's but fds 0-2 (to /dev/null), and no environment.
    ( exec 251>&- ; exec env -i "$work/golden" "$mode" "$work/ready" </dev/null >/dev/null 2>&1 ) &
    local pid=$!
    for _ in $(seq 100); do [ -e "$work/ready" ] && break; sleep 0.05; done
    [ -e "$work/ready" ] || { echo "golden $mode did not start" >&2; kill -9 "$pid"; exit 1; }
    rm -f "$out/$name.crest"
    "$bin/cr_checkpoint" --kill --file "$out/$name.crest" "$@" "$pid"
    { wait "$pid"; } 2>/dev/null || true
    chmod 0644 "$out/$name.crest"
    "$bin/cr_info" --verify "$out/$name.crest" | tail -n 1
}

# An incremental image (format 4.3 on) and its parent: the process checkpointed with --track,
# then with --incremental, running on, then killed.
incremental() {
    rm -f "$work/ready" "$out/incremental-parent.crest" "$out/incremental.crest"
    ( exec 251>&- ; exec env -i "$work/golden" single "$work/ready" </dev/null >/dev/null 2>&1 ) &
    local pid=$!
    for _ in $(seq 100); do [ -e "$work/ready" ] && break; sleep 0.05; done
    [ -e "$work/ready" ] || { echo "golden single did not start" >&2; kill -9 "$pid"; exit 1; }
    "$bin/cr_checkpoint" --track --file "$out/incremental-parent.crest" "$pid"
    "$bin/cr_checkpoint" --incremental "$out/incremental-parent.crest" --file "$out/incremental.crest" "$pid"
    kill -9 "$pid"
    { wait "$pid"; } 2>/dev/null || true
    # The note of the tracker left in it (beside cr_checkpoint's claim files).
    rm -f /run/lock/crest-tracking-"$pid"-* /dev/shm/crest-tracking-"$pid"-* /tmp/crest-tracking-"$pid"-*
    chmod 0644 "$out/incremental-parent.crest" "$out/incremental.crest"
    "$bin/cr_info" --verify "$out/incremental.crest" | tail -n 1
}

one single single
one tree tree
one threads threads
one compressed tree --compress
one sharedfiles sharedfiles
one guards guards
if [ "$major.$minor" != 4.0 ] && [ "$major.$minor" != 4.1 ] && [ "$major.$minor" != 4.2 ]; then incremental; fi
ls -l "$out"/*.crest
