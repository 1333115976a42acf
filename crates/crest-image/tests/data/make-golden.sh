#!/usr/bin/env bash
# Writes the golden images of the current image format into MAJOR.MINOR/ here (see README):
# golden.c, built static, checkpointed with the cr_checkpoint of target/release, as root.
#   single.crest      one process
#   tree.crest        a process and its two children
#   threads.crest     a process with four threads
#   compressed.crest  the tree, with page data compressed (--compress)
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

one single single
one tree tree
one threads threads
one compressed tree --compress
ls -l "$out"/*.crest
