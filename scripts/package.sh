#!/usr/bin/env bash
# package.sh deb|rpm STAGE VERSION OUTDIR: builds a binary package of the staged install in
# STAGE (made by `make install PREFIX=/usr DESTDIR=STAGE`) and leaves it in OUTDIR.
#
#   deb: dpkg-deb, with Depends computed by dpkg-shlibdeps (or from the glibc symbol versions
#        the commands use, where dpkg-shlibdeps is missing); man pages gzipped as Debian wants.
#   rpm: rpmbuild, from a spec written here that copies the staged tree; rpmbuild adds the
#        library requirements it finds in the binaries.
# Both hold exactly the staged files, so they match `make install` and docs/admin-guide.md.
set -euo pipefail
kind=$1 stage=$(cd "$2" && pwd) version=$3 out=$4
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/crest-pkg.XXXXXX")
trap 'rm -rf "$work"' EXIT
# A copy of the staged tree with the commands stripped of debugging information (the release
# profile keeps line tables for backtraces; a package does not need them).
root=$work/root
cp -a "$stage" "$root"
"$here/need.sh" strip binutils binutils
strip --strip-debug "$root"/usr/bin/*
release=1
summary="Checkpoint/restart of Linux processes with BLCR's commands, from user space"
description="crest saves a running process (memory, registers, threads, open files, signal
state) to a file with cr_checkpoint and brings it back with cr_restart, with the commands and
options of Berkeley Lab Checkpoint/Restart (BLCR), but without a kernel module: it works
through ptrace and the kernel's checkpoint/restore interfaces. cr_check reports whether a
machine and a user can checkpoint and restart; cr_info describes an image."

case $kind in
deb)
  "$here/need.sh" dpkg-deb dpkg dpkg
  arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
  gzip -9n "$root"/usr/share/man/man1/*.1 "$root"/usr/share/man/man3/*.3
  cat >"$root/usr/share/doc/crest/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: crest
License: GPL-2.0-or-later

Files: *
Copyright: the crest developers
License: GPL-2.0-or-later
 On Debian systems, the full text of the GNU General Public License version 2 is in
 /usr/share/common-licenses/GPL-2.
EOF
  bins=("$root"/usr/bin/*)
  depends=""
  if command -v dpkg-shlibdeps >/dev/null 2>&1; then
    mkdir -p "$work/src/debian"
    printf 'Source: crest\n\nPackage: crest\nArchitecture: any\n' >"$work/src/debian/control"
    depends=$(cd "$work/src" && dpkg-shlibdeps -O "${bins[@]}" 2>/dev/null | sed -n 's/^shlibs:Depends=//p') || depends=""
  fi
  if [ -z "$depends" ]; then
    glibc=$(objdump -T "${bins[@]}" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1)
    depends="libc6 (>= ${glibc:-2.34}), libgcc-s1"
  fi
  mkdir -p "$root/DEBIAN"
  (cd "$root" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
  cat >"$root/DEBIAN/control" <<EOF
Package: crest
Version: $version-$release
Architecture: $arch
Maintainer: crest developers <crest@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: $depends
Section: admin
Priority: optional
Description: $summary
$(echo "$description" | sed 's/^/ /')
EOF
  deb=$out/crest_${version}-${release}_${arch}.deb
  dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
  echo "package.sh: wrote $deb"
  ;;
rpm)
  "$here/need.sh" rpmbuild rpm rpm-build
  arch=$(uname -m)
  # The file list, from the staged tree: man pages with a glob, since rpmbuild compresses them.
  files=$(cd "$root" && find . \( -type f -o -type l \) | sed 's|^\.||' | sort | sed 's|^\(/usr/share/man/.*\)$|\1*|')
  mkdir -p "$work"/{BUILD,RPMS,SOURCES,SPECS,SRPMS}
  cat >"$work/SPECS/crest.spec" <<EOF
Name:           crest
Version:        $version
Release:        $release
Summary:        $summary
License:        GPL-2.0-or-later
ExclusiveArch:  x86_64

%description
$description

%install
mkdir -p %{buildroot}
cp -a $root/. %{buildroot}/

%files
%dir /usr/share/doc/crest
$files
EOF
  rpmbuild -bb --quiet --target "$arch" \
    --define "_topdir $work" \
    --define "debug_package %{nil}" \
    --define "_build_id_links none" \
    --define "_binary_payload w9.xzdio" \
    "$work/SPECS/crest.spec" >"$work/log" 2>&1 || { cat "$work/log" >&2; exit 1; }
  cp "$work"/RPMS/*/crest-"$version"-"$release".*.rpm "$out"/
  echo "package.sh: wrote $(ls "$out"/crest-"$version"-"$release".*.rpm)"
  ;;
*)
  echo "usage: package.sh deb|rpm STAGE VERSION OUTDIR" >&2
  exit 2
  ;;
esac
