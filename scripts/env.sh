# Shared by the scripts: one cargo target directory outside the clone, so that wasmtime (and
# later RocksDB and librdkafka) are built once per machine, not once per clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# The host binary, built in release mode by the scripts.
HOST="$CARGO_TARGET_DIR/release/host"
