#!/usr/bin/env bash
# Fetches Debian's openclipart-png 1:0.18+dfsg-19 (6 900 clipart PNGs plus 1 221 symlinked
# duplicates, by category) into a data folder for `--data openclipart[:DIR]`.
# Usage: bash scripts/setup-openclipart.sh [DIR]   (default data/openclipart; ~131 MB download, 162 MB on disk)
#
# `apt-get download` fetches the .deb from the machine's Debian mirror without root and without
# installing it; `dpkg-deb -x` unpacks it. If the package index lacks this version, the script
# runs `apt-get update` when it can without a password (as root, or passwordless sudo); otherwise
# (or not Debian) run `sudo apt-get update` yourself, or fetch
#   http://deb.debian.org/debian/pool/main/o/openclipart/openclipart-png_0.18+dfsg-19_all.deb
# and pass it: OPENCLIPART_DEB=path/to/it.deb bash scripts/setup-openclipart.sh
#
# Open Clip Art Library (http://www.openclipart.org): the artists dedicated these images to the
# public domain (Creative Commons Public Domain Dedication); see DIR/COPYRIGHT.
set -euo pipefail
VERSION=1:0.18+dfsg-19
SHA256=f07f1545a2970c2cf3fa339bc2405da1a95cf2b1827bfa05bf73eb1c20291c02
dir=${1:-data/openclipart}

if [[ -d "$dir/png" && -f "$dir/VERSION" && "$(cat "$dir/VERSION")" == "$VERSION" ]]; then
  echo "openclipart-png $VERSION is already in $dir ($(find "$dir/png" -type f -name '*.png' | wc -l) PNGs)"
  exit 0
fi
command -v dpkg-deb >/dev/null || { echo "error: dpkg-deb is needed (Debian/Ubuntu's dpkg package)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ -n "${OPENCLIPART_DEB:-}" ]]; then
  cp "$OPENCLIPART_DEB" "$work/openclipart-png.deb"
else
  command -v apt-get >/dev/null || {
    echo "error: apt-get is needed, or set OPENCLIPART_DEB to a downloaded openclipart-png_0.18+dfsg-19_all.deb" >&2
    exit 1
  }
  echo "fetching openclipart-png=$VERSION with apt-get download (131 MB)…"
  # As root, apt hands the download to its unprivileged _apt user, which cannot write into a
  # private temporary folder; download as root instead (no effect for other users).
  sandbox=()
  [[ $(id -u) == 0 ]] && sandbox=(-o APT::Sandbox::User=root)
  download() { (cd "$work" && apt-get "${sandbox[@]}" -q download "openclipart-png=$VERSION"); }
  if ! download; then
    # A stale or empty package index (a fresh container has none): update it when that needs
    # no password (as setup-test.sh does), else say what to do.
    if [[ $(id -u) == 0 ]]; then
      update=(apt-get update -qq)
    elif sudo -n true 2>/dev/null; then
      update=(sudo apt-get update -qq)
    else
      update=()
    fi
    if ! ((${#update[@]})) || ! { echo "updating the package index (${update[*]})…"; "${update[@]}" && download; }; then
      echo "error: apt-get could not download openclipart-png=$VERSION. If it said the package or version is" >&2
      echo "unknown, the package index is stale: run 'sudo apt-get update', or download" >&2
      echo "http://deb.debian.org/debian/pool/main/o/openclipart/openclipart-png_0.18+dfsg-19_all.deb and" >&2
      echo "rerun with OPENCLIPART_DEB=path/to/it.deb" >&2
      exit 1
    fi
  fi
  mv "$work"/openclipart-png_*.deb "$work/openclipart-png.deb"
fi
actual=$(sha256sum "$work/openclipart-png.deb" | cut -d' ' -f1)
if [[ "$actual" != "$SHA256" ]]; then
  echo "error: the .deb's sha256 is $actual, expected $SHA256 (openclipart-png $VERSION)" >&2
  exit 1
fi
dpkg-deb -x "$work/openclipart-png.deb" "$work/root"

# Build the folder beside the target, then move it into place (an interrupted run leaves no half folder).
mkdir -p "$(dirname "$dir")"
staging="$dir.partial"
rm -rf "$staging"
mkdir -p "$staging"
mv "$work/root/usr/share/openclipart/png" "$staging/png"
mv "$work/root/usr/share/doc/openclipart-png/copyright" "$staging/COPYRIGHT"
cat > "$staging/CREDIT.md" <<CREDIT
Clip art: Open Clip Art Library (http://www.openclipart.org), as packaged by Debian
(openclipart-png $VERSION). The artists dedicated their images to the public domain
(Creative Commons Public Domain Dedication); each PNG names its artist in its Author text chunk.
CREDIT
echo "$VERSION" > "$staging/VERSION"
rm -rf "$dir"
mv "$staging" "$dir"
echo "openclipart-png $VERSION: $(find "$dir/png" -type f -name '*.png' | wc -l) PNGs in $dir/png (public-domain dedication)"
