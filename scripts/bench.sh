#!/usr/bin/env bash
# make bench: builds the benchmark targets and runs crest-bench; options pass through (see
# `crest-bench --help`; `make bench BENCH_ARGS=--quick` for a short run at 256 MiB).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$here/target/bench"
gcc -O2 -Wall -o "$here/target/bench/hold" "$here/bench/hold.c"
gcc -O2 -Wall -o "$here/target/bench/loop" "$here/bench/loop.c"
gcc -O1 -pthread -o "$here/target/bench/threads" "$here/tests/threads/threads.c"
gcc -O2 -Wall -o "$here/target/bench/ring" "$here/tests/c/ring.c"
gcc -O2 -Wall -o "$here/target/bench/rewrite" "$here/bench/rewrite.c"
echo "crest $(git -C "$here" describe --always --dirty 2>/dev/null || echo '(no git)')"
exec "$here/target/release/crest-bench" --bin "$here/target/release" --progs "$here/target/bench" "$@"
