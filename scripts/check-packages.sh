#!/usr/bin/env bash
# check-packages.sh PKGDIR VERSION: installs the .deb (with dpkg) and the .rpm (with rpm) left
# in PKGDIR by `make debs rpms` into scratch roots, checks that each holds every file
# docs/admin-guide.md lists for PREFIX=/usr (and nothing else), and runs the installed
# cr_check and cr_info --help from each root. Nothing outside the scratch roots is touched.
set -euo pipefail
pkgdir=$1 version=$2
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/crest-pkgcheck.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail=0 passed=0

# The guide's list of installed files, relative to PREFIX, between its two markers.
# Symbolic links (the libraries' development names) count as installed files.
expected=$(sed -n '/<!-- installed-files:begin -->/,/<!-- installed-files:end -->/p' "$here/docs/admin-guide.md" |
  grep -E '^PREFIX/' | sed 's|^PREFIX/|/usr/|' | sort)
[ -n "$expected" ] || { echo "check-packages: no file list in docs/admin-guide.md" >&2; exit 1; }

# compare NAME ROOT: the files and links (libcr.so and the like) under ROOT/usr, man pages
# without their .gz, against the list.
compare() {
  local name=$1 root=$2 got
  got=$(cd "$root" && find usr \( -type f -o -type l \) ! -name copyright | sed 's|^|/|; s|\.gz$||' | sort)
  if [ "$got" = "$expected" ]; then
    echo "ok: $name holds the $(echo "$expected" | wc -l) files the guide lists"
    passed=$((passed + 1))
  else
    echo "FAIL: $name differs from the guide's list (< guide, > package):"
    diff <(echo "$expected") <(echo "$got") || true
    fail=$((fail + 1))
  fi
  if "$root/usr/bin/cr_check" -q && "$root/usr/bin/cr_info" --help >/dev/null; then
    echo "ok: $name's cr_check says ready and cr_info runs"
    passed=$((passed + 1))
  else
    echo "FAIL: $name's commands do not run (cr_check exit $?)"
    fail=$((fail + 1))
  fi
}

deb=$(ls "$pkgdir"/crest_"$version"-*.deb 2>/dev/null | head -n 1 || true)
if [ -n "$deb" ]; then
  root=$work/deb
  mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/triggers"
  touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
  # The scratch root has no libc6 package; the host's libraries serve the commands.
  dpkg --root="$root" --force-depends --force-not-root -i "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; exit 1; }
  dpkg --root="$root" -s crest | grep -q '^Status: install ok installed' && echo "ok: dpkg installed $(basename "$deb")"
  compare deb "$root"
else
  echo "check-packages: no crest_$version-*.deb in $pkgdir (make debs)"
fi

rpmfile=$(ls "$pkgdir"/crest-"$version"-*.rpm 2>/dev/null | head -n 1 || true)
if [ -n "$rpmfile" ]; then
  root=$work/rpm
  mkdir -p "$root"
  rpm --root="$root" --initdb
  rpm --root="$root" -i --nodeps --nosignature "$rpmfile" >"$work/rpm.log" 2>&1 || { cat "$work/rpm.log"; exit 1; }
  rpm --root="$root" -q crest >/dev/null && echo "ok: rpm installed $(basename "$rpmfile")"
  compare rpm "$root"
else
  echo "check-packages: no crest-$version-*.rpm in $pkgdir (make rpms)"
fi
echo "packages: $passed passed, $fail failed"
[ "$fail" = 0 ]
