#!/usr/bin/env bash
# make bench: builds the benchmark targets and runs crest-bench (options pass through:
# --sizes MiB,MiB --storage DIR,DIR --reps N --threads N,N).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$here/target/bench"
gcc -O2 -o "$here/target/bench/hold" "$here/bench/hold.c"
gcc -O1 -pthread -o "$here/target/bench/threads" "$here/tests/threads/threads.c"
exec "$here/target/release/crest-bench" --bin "$here/target/release" --progs "$here/target/bench" "$@"
