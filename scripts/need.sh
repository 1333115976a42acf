#!/usr/bin/env bash
# need.sh TOOL DEB-PACKAGE RPM-PACKAGE: makes sure TOOL is on PATH, installing it with the
# system's package manager when it is missing (apt-get on Debian and Ubuntu, dnf on Fedora
# and RHEL, zypper on SUSE). Installing needs root; otherwise it says what to install.
set -euo pipefail
tool=$1 deb=$2 rpm=$3
command -v "$tool" >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "need.sh: $tool is missing; install it (Debian/Ubuntu: $deb, Fedora/RHEL/SUSE: $rpm) or run as root" >&2
  exit 1
fi
echo "need.sh: installing $tool"
if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "$deb" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$deb" >/dev/null; }
elif command -v dnf >/dev/null 2>&1; then
  dnf install -y -q "$rpm"
elif command -v zypper >/dev/null 2>&1; then
  zypper --non-interactive install "$rpm"
else
  echo "need.sh: no known package manager; install $tool by hand" >&2
  exit 1
fi
command -v "$tool" >/dev/null 2>&1 || { echo "need.sh: $tool still missing after installing $deb/$rpm" >&2; exit 1; }
