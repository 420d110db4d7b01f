#!/usr/bin/env bash
# Build the local base image (Debian bookworm + python3, python3-venv, tini, CA certificates) with
# debootstrap, for machines that cannot pull from a public registry; the project's Dockerfiles
# take it as `--build-arg BASE=localhost/debian-python:bookworm`. Needs root, debootstrap and
# podman. Keep podman's state where you want it with CONTAINERS_CONF / CONTAINERS_STORAGE_CONF
# (the container tests set both to files under their WORK folder).
#
#   tests/container/build-base-image.sh [IMAGE] [SCRATCH_DIR]
set -euo pipefail

IMAGE=${1:-localhost/debian-python:bookworm}
SCRATCH=${2:-$(mktemp -d)}
MIRROR=${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-${MIRROR%/debian}/debian-security}

if podman image exists "$IMAGE"; then
  echo "base image $IMAGE: present"
  exit 0
fi

R=$SCRATCH/rootfs
rm -rf "$R"
mkdir -p "$SCRATCH"
echo "base image $IMAGE: debootstrap bookworm from $MIRROR"
debootstrap --variant=minbase bookworm "$R" "$MIRROR" >"$SCRATCH/debootstrap.log" 2>&1 \
  || { tail -20 "$SCRATCH/debootstrap.log" >&2; exit 1; }
cat >"$R/etc/apt/sources.list" <<SOURCES
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY_MIRROR bookworm-security main
SOURCES
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
  >"$R/etc/apt/apt.conf.d/99no-recommends"
# the host's apt settings (e.g. a snapshot mirror needs Acquire::Check-Valid-Until "false")
cp /etc/apt/apt.conf.d/* "$R/etc/apt/apt.conf.d/" 2>/dev/null || true

cleanup() { umount "$R/dev/pts" "$R/dev" "$R/proc" 2>/dev/null || true; }
trap cleanup EXIT
mount -t proc proc "$R/proc"
mount --bind /dev "$R/dev"
mount --bind /dev/pts "$R/dev/pts"
chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  LANG=C.UTF-8 sh -ec '
    apt-get update -q
    apt-get install -y -q python3 python3-venv python3-pip ca-certificates tini
    apt-get clean
    rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* /usr/share/locale/*' \
  >"$SCRATCH/chroot-apt.log" 2>&1 || { tail -20 "$SCRATCH/chroot-apt.log" >&2; exit 1; }
cleanup
trap - EXIT
: >"$R/etc/resolv.conf"
echo localhost >"$R/etc/hostname" # podman provides both at run time

tar --numeric-owner -C "$R" -c . | podman import -q \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$IMAGE" >/dev/null
rm -rf "$R"
echo "base image $IMAGE: built"
