#!/usr/bin/env bash
# Rebuilds capture-ebpf/bpf/flowsql.bpf.o from its C source with Debian's clang-19.
#
# The object is committed so that `cargo build` needs no clang. `--check` builds
# into a temporary file and fails when it differs from the committed object: the
# build is reproducible (no system headers, no absolute paths in debug info), so
# any difference means the source changed without a rebuild, or vice versa.
set -euo pipefail
cd "$(dirname "$0")/bpf"
clang=${CLANG:-clang-19}
command -v "$clang" >/dev/null || { echo "error: $clang not found (apt-get install clang-19)" >&2; exit 1; }

out=flowsql.bpf.o
if [ "${1:-}" = "--check" ]; then
  out=$(mktemp --suffix=.bpf.o)
  trap 'rm -f "$out"' EXIT
fi
# -fdebug-prefix-map: the checkout path must not end up in the debug info.
"$clang" -O2 -g -target bpf -mcpu=v3 -nostdinc -Wall -Werror \
  -fdebug-prefix-map="$PWD"=. -fno-ident \
  -c flowsql.bpf.c -o "$out"
if [ "${1:-}" = "--check" ]; then
  if ! cmp -s "$out" flowsql.bpf.o; then
    echo "error: capture-ebpf/bpf/flowsql.bpf.o is stale: run capture-ebpf/build-bpf.sh and commit it" >&2
    exit 1
  fi
  echo "capture-ebpf/bpf/flowsql.bpf.o matches its source"
fi
