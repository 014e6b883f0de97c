#!/usr/bin/env bash
# Raspberry Pi 4 or 5 on a fresh Raspberry Pi OS bookworm (64-bit): the
# packages of the rpi4/rpi5 device profiles, ssdkit in /opt/ssdkit/venv, and
# the ssdkit-camera systemd unit, which runs the camera loop at boot and
# restarts it on failure.
#
#   sudo bash devices/setup/raspberry_pi.sh MODEL.tflite [ssdkit camera options]
#   sudo bash devices/setup/raspberry_pi.sh ssd_mnv2_int8.tflite --source picamera2 --serve 0.0.0.0:8080
#
# Default options: --source 0 --serve 127.0.0.1:8080, with --device rpi4 or
# rpi5 as /proc/device-tree/model says. Change them later in
# /etc/default/ssdkit-camera. SSDKIT_PACKAGE=/path/to/ssdkit installs a
# checkout or wheel instead of ssdkit from PyPI.
set -euo pipefail
. "$(dirname "$0")/common.sh"

[ $# -ge 1 ] || die "usage: sudo bash $0 MODEL.tflite [ssdkit camera options]"
require_root
model=$1
shift

case "$(tr -d '\0' 2>/dev/null < /proc/device-tree/model || true)" in
  *"Raspberry Pi 5"*) device=rpi5 ;;
  *"Raspberry Pi 4"*) device=rpi4 ;;
  *) echo "warning: not a Raspberry Pi 4 or 5; using the rpi4 profile" >&2; device=rpi4 ;;
esac
. /etc/os-release
[ "${VERSION_CODENAME:-}" = bookworm ] \
  || echo "warning: written for Raspberry Pi OS bookworm; this is ${PRETTY_NAME:-unknown}" >&2

apt-get update
apt-get install -y python3-venv python3-numpy python3-opencv python3-pil
# Camera modules (--source picamera2); without the recommends, which pull in a desktop.
apt-get install -y --no-install-recommends python3-picamera2
require_python
install_ssdkit tflite-runtime

if [ $# -eq 0 ]; then
  set -- --source 0 --serve 127.0.0.1:8080
fi
install_service "$model" --device "$device" "$@"
