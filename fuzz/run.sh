#!/usr/bin/env bash
# Fuzzes the image parser for SECONDS (default 60) with cargo fuzz (needs a nightly toolchain;
# installs cargo-fuzz if missing). The corpus in fuzz/corpus/image_parse is kept in the repo.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo +nightly fuzz run image_parse corpus/image_parse -- -max_total_time="$secs" -max_len=262144
