#!/usr/bin/env bash
# Fetches fluentui-emoji 1.3.0 from the npm registry (Microsoft's Fluent UI emoji as SVG; 3 145 in
# the colour "modern" style, skin tones included) into a data folder for `--data fluentui[:DIR]`.
# Usage: bash scripts/setup-fluentui.sh [DIR]   (default data/fluentui; ~24 MB download, 110 MB on disk)
#
# Fluent Emoji © Microsoft Corporation, MIT licence (https://github.com/microsoft/fluentui-emoji);
# the npm package by Mohammad Abu Mattar, MIT licence (DIR/LICENSE).
set -euo pipefail
VERSION=1.3.0
SHA256=ec892e607e854859b812c7d827801756adc19955b0ef56d4ae8afcddd19492c5
dir=${1:-data/fluentui}

if [[ -d "$dir/modern" && -f "$dir/VERSION" && "$(cat "$dir/VERSION")" == "$VERSION" ]]; then
  echo "fluentui-emoji $VERSION is already in $dir ($(ls "$dir/modern" | wc -l) SVGs)"
  exit 0
fi
source "$(dirname "${BASH_SOURCE[0]}")/npm-fetch.sh"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
npm_fetch fluentui-emoji "$VERSION" "$SHA256" "$work"
tar -xzf "$work/fluentui-emoji-$VERSION.tgz" -C "$work" package/icons/modern package/LICENSE

# Build the folder beside the target, then move it into place (an interrupted run leaves no half folder).
mkdir -p "$(dirname "$dir")"
staging="$dir.partial"
rm -rf "$staging"
mkdir -p "$staging"
mv "$work/package/icons/modern" "$staging/modern"
mv "$work/package/LICENSE" "$staging/LICENSE"
cat > "$staging/CREDIT.md" <<CREDIT
Emoji artwork: Fluent Emoji © Microsoft Corporation (https://github.com/microsoft/fluentui-emoji),
MIT licence; packaged for npm as fluentui-emoji $VERSION by Mohammad Abu Mattar (MIT licence, LICENSE).
CREDIT
echo "$VERSION" > "$staging/VERSION"
rm -rf "$dir"
mv "$staging" "$dir"
echo "fluentui-emoji $VERSION: $(ls "$dir/modern" | wc -l) SVGs in $dir/modern (MIT, © Microsoft)"
