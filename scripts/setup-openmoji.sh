#!/usr/bin/env bash
# Fetches OpenMoji 17.0.0 (colour SVGs + openmoji.csv) from the npm registry into a data folder
# for `--data openmoji[:DIR]`. Usage: bash scripts/setup-openmoji.sh [DIR]   (default data/openmoji)
#
# OpenMoji – the open-source emoji and icon project. License: CC BY-SA 4.0. https://openmoji.org
# Credit OpenMoji wherever its images are shown.
set -euo pipefail
VERSION=17.0.0
SHA256=55ee7d13485dec86e9f38c1f3a645a13382d33ff97c0cd845ee824b0aef45e68
dir=${1:-data/openmoji}

if [[ -f "$dir/openmoji.csv" && -f "$dir/VERSION" && "$(cat "$dir/VERSION")" == "$VERSION" ]]; then
  echo "OpenMoji $VERSION is already in $dir ($(ls "$dir/svg" | wc -l) SVGs)"
  exit 0
fi
source "$(dirname "${BASH_SOURCE[0]}")/npm-fetch.sh"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
npm_fetch openmoji "$VERSION" "$SHA256" "$work"
tar -xzf "$work/openmoji-$VERSION.tgz" -C "$work" package/data/openmoji.csv package/color/svg package/LICENSE.txt

# Build the folder beside the target, then move it into place (an interrupted run leaves no half folder).
mkdir -p "$(dirname "$dir")"
staging="$dir.partial"
rm -rf "$staging"
mkdir -p "$staging"
mv "$work/package/color/svg" "$staging/svg"
mv "$work/package/data/openmoji.csv" "$staging/openmoji.csv"
mv "$work/package/LICENSE.txt" "$staging/LICENSE.txt"
cat > "$staging/CREDIT.md" <<CREDIT
Emoji artwork: OpenMoji $VERSION – the open-source emoji and icon project (https://openmoji.org).
License: CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/).
CREDIT
echo "$VERSION" > "$staging/VERSION"
rm -rf "$dir"
mv "$staging" "$dir"
echo "OpenMoji $VERSION: $(ls "$dir/svg" | wc -l) SVGs and openmoji.csv in $dir (CC BY-SA 4.0, credit OpenMoji)"
