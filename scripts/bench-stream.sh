#!/usr/bin/env bash
# Migration on one machine, streamed against through a file: for each size, REPS times each,
#   file:   cr_checkpoint --kill -f DIR/img PID, then cr_restart DIR/img
#   stream: cr_checkpoint --kill --stream -f - PID | cr_restart --lazy --fd 3 (3<&0 </dev/null)
# of bench/hold.c holding SIZE MiB of random data, restarted with --no-restore-pid; each
# restored copy is told to check every byte (SIGUSR2) as soon as it runs and must say PASS.
# Prints per run, then the median and minimum of each mode and their ratio (file / stream):
#   restart_to_running  from the start of the restart (the stream: its first byte) until the
#                       process runs
#   total_to_running    from the start of the checkpoint until the restored process runs
#   total_all_in        from the start of the checkpoint until every page is in (the file:
#                       when it runs; the stream: when the background fill ends, the process
#                       checking its memory meanwhile)
# usage: scripts/bench-stream.sh [--sizes "1024 4096"] [--reps 5] [--dir /var/tmp]
# As root, after cargo build --release, with no descriptors open but 0-2 (the checkpoint
# refuses others that lead outside the process).
set -euo pipefail
sizes="1024 4096"
reps=5
base=/var/tmp
while [ $# -gt 0 ]; do
    case $1 in
        --sizes) sizes=$2; shift 2 ;;
        --reps) reps=$2; shift 2 ;;
        --dir) base=$2; shift 2 ;;
        *) echo "usage: $0 [--sizes \"1024 4096\"] [--reps N] [--dir DIR]" >&2; exit 2 ;;
    esac
done
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${CREST_BIN:-$root/target/release}
work=$(mktemp -d "$base/crest-bench-stream.XXXXXX")
started=()
cleanup() {
    for p in "${started[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cc -O2 -o "$work/hold" "$root/bench/hold.c"
export TMPDIR=$work

now_ms() { date +%s%3N; }
field() { # FILE KEY: the number after KEY= on a crest-timing line
    grep -o "$2=[0-9.]*" "$1" | head -n 1 | cut -d= -f2
}

# The restored copy run by cr_restart $1: its child whose executable is hold.
restored() {
    local rs=$1 c
    for c in $(cat "/proc/$rs/task/$rs/children" 2>/dev/null); do
        [ "$(readlink "/proc/$c/exe" 2>/dev/null)" = "$work/hold" ] && { echo "$c"; return 0; }
    done
    return 0
}

# Starts hold SIZE with its output to $work/out; sets $pid once it is ready.
start_hold() {
    rm -f "$work/out"
    "$work/hold" "$1" >"$work/out" 2>/dev/null </dev/null &
    pid=$!
    started+=("$pid")
    for _ in $(seq 600); do grep -q '^ready' "$work/out" 2>/dev/null && return; sleep 0.1; done
    echo "hold $1 did not start" >&2
    exit 1
}

# Tells the restored copy of cr_restart $1 to check itself, waits for cr_restart, checks PASS.
check_and_wait() {
    local rs=$1 c=""
    for _ in $(seq 6000); do c=$(restored "$rs"); [ -n "$c" ] && break; sleep 0.01; done
    [ -n "$c" ] || { echo "no restored process" >&2; cat "$work/rs.err" >&2; exit 1; }
    # Let go by cr_restart first.
    for _ in $(seq 2000); do grep -q $'^TracerPid:\t0$' "/proc/$c/status" 2>/dev/null && break; sleep 0.005; done
    kill -USR2 "$c"
    wait "$rs" || true
    grep -q PASS "$work/out" || { echo "the restored copy did not pass its check" >&2; tail -n 3 "$work/out" >&2; cat "$work/rs.err" >&2; exit 1; }
}

printf '%-7s %5s %3s %20s %18s %14s\n' mode MiB run restart_to_running total_to_running total_all_in
results=$work/results
: >"$results"
for size in $sizes; do
    for run in $(seq "$reps"); do
        # Through a file.
        start_hold "$size"
        t0=$(now_ms)
        CREST_TIMING=1 "$bin/cr_checkpoint" --kill --nosync -f "$work/img" "$pid" 2>"$work/ck.err" || { cat "$work/ck.err" >&2; exit 1; }
        wait "$pid" 2>/dev/null || true
        t1=$(now_ms)
        CREST_TIMING=1 "$bin/cr_restart" --no-restore-pid --relaxed-stdio "$work/img" </dev/null 2>"$work/rs.err" &
        rs=$!
        started+=("$rs")
        check_and_wait "$rs"
        run_ms=$(field "$work/rs.err" running_after_ms)
        total=$(echo "$t1 - $t0 + $run_ms" | bc)
        printf '%-7s %5s %3s %20.1f %18.1f %14.1f\n' file "$size" "$run" "$run_ms" "$total" "$total" | tee -a "$results"
        rm -f "$work/img"
        # Streamed.
        start_hold "$size"
        t0=$(now_ms)
        ( CREST_TIMING=1 exec "$bin/cr_checkpoint" --kill --stream -f - "$pid" 2>"$work/ck.err" ) |
            ( CREST_TIMING=1 exec "$bin/cr_restart" --lazy --no-restore-pid --relaxed-stdio --fd 3 3<&0 </dev/null 2>"$work/rs.err" ) &
        rs=$!
        started+=("$rs")
        # $rs is the last command of the pipeline, cr_restart itself (exec).
        check_and_wait "$rs"
        wait "$pid" 2>/dev/null || true
        first=$(field "$work/rs.err" first_byte_to_running_ms)
        run_ms=$(field "$work/rs.err" running_after_ms)
        fill=$(field "$work/rs.err" fill_ms)
        printf '%-7s %5s %3s %20.1f %18.1f %14.1f\n' stream "$size" "$run" "$first" "$run_ms" "$(echo "$run_ms + ${fill:-0}" | bc)" | tee -a "$results"
    done
done
echo
echo "medians and minimums (ms), and file / stream"
for size in $sizes; do
    for col in 4 5 6; do
        name=$(echo "restart_to_running total_to_running total_all_in" | cut -d' ' -f$((col - 3)))
        stat() { awk -v m="$1" -v s="$size" -v c="$col" '$1 == m && $2 == s { print $c }' "$results" | sort -n | awk '{ a[NR] = $1 } END { printf "%.1f %.1f", (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2), a[1] }'; }
        read -r fmed fmin <<<"$(stat file)"
        read -r smed smin <<<"$(stat stream)"
        printf '%5s MiB %-20s file median %9.1f min %9.1f   stream median %9.1f min %9.1f   ratio %6.2f\n' "$size" "$name" "$fmed" "$fmin" "$smed" "$smin" "$(echo "scale=2; $fmed / $smed" | bc)"
    done
done
