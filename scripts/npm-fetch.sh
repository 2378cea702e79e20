# Sourced by the set-up scripts that take a package from the npm registry (not run on its own).
# npm_fetch NAME VERSION SHA256 WORKDIR: `npm pack`s NAME@VERSION into WORKDIR and checks the
# tarball's sha256 against the pinned one; on success WORKDIR/NAME-VERSION.tgz is the package.
npm_fetch() {
  local name=$1 version=$2 sha256=$3 work=$4
  command -v npm >/dev/null || { echo "error: npm is needed (apt-get install -y npm)" >&2; return 1; }
  echo "fetching $name@$version from the npm registry…"
  (cd "$work" && npm pack --silent "$name@$version" >/dev/null)
  local actual
  actual=$(sha256sum "$work/$name-$version.tgz" | cut -d' ' -f1)
  if [[ "$actual" != "$sha256" ]]; then
    echo "error: the package's sha256 is $actual, expected $sha256 ($name $version)" >&2
    return 1
  fi
}
