#!/usr/bin/env bash
# Starts a counting program, checkpoints it with cr_checkpoint --kill, and restarts it with
# cr_restart, so you can watch it go on counting where it stopped.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin=$here/target/release
work=$(mktemp -d /tmp/crest-demo.XXXXXX)
trap 'kill $(cat "$work/pids" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
gcc -O1 -o "$work/counter" "$here/demo/counter.c"
cd "$work"

echo "== starting the counter"
# The counter gets only standard input, output and error: a descriptor this shell inherited
# beyond those (a terminal emulator's, an editor's) would lead outside the checkpoint, and
# crest refuses to checkpoint what it cannot restore.
(
  for f in /proc/$BASHPID/fd/*; do
    n=${f##*/}
    if [ "$n" -gt 2 ]; then eval "exec $n>&-"; fi
  done
  exec "$work/counter" 40
) &
pid=$!
echo $pid >"$work/pids"
sleep 1.5

echo "== cr_checkpoint --kill $pid"
"$bin/cr_checkpoint" -v --kill "$pid"
wait "$pid" 2>/dev/null || true
echo "== the counter is gone; the image:"
"$bin/cr_info" "context.$pid" | head -6
sleep 1

echo "== cr_restart context.$pid (it goes on counting, with the same PID)"
"$bin/cr_restart" "context.$pid"
echo "== the restored counter finished; cr_restart exited with its status $?"
