#!/usr/bin/env bash
# A Coral Edge TPU on a Debian-based host (Raspberry Pi OS, Debian, Ubuntu):
# Coral's apt repository and Edge TPU runtime (libedgetpu1-std; for the
# M.2/Mini PCIe card also the gasket driver), ssdkit in /opt/ssdkit/venv, and
# the ssdkit-camera systemd unit (camera loop at boot, restarted on failure).
#
#   sudo bash devices/setup/coral.sh usb|pcie MODEL_edgetpu.tflite [ssdkit camera options]
#
# Default options: --source 0 --serve 127.0.0.1:8080, with --device
# coral_usb or coral_pcie. Change them later in /etc/default/ssdkit-camera.
# Plug the USB Accelerator in after this script: its udev rule applies to new devices.
# SSDKIT_PACKAGE=/path/to/ssdkit installs a checkout or wheel instead of ssdkit from PyPI.
set -euo pipefail
. "$(dirname "$0")/common.sh"

[ $# -ge 2 ] || die "usage: sudo bash $0 usb|pcie MODEL_edgetpu.tflite [ssdkit camera options]"
require_root
kind=$1
model=$2
shift 2
case "$kind" in
  usb) device=coral_usb; runtime=(libedgetpu1-std) ;;
  pcie) device=coral_pcie; runtime=(gasket-dkms libedgetpu1-std) ;;
  *) die "$kind: expected usb or pcie" ;;
esac
case "$model" in
  *_edgetpu.tflite) ;;
  *) echo "warning: $model is not compiled for the Edge TPU (*_edgetpu.tflite): it would run on the CPU" >&2 ;;
esac

apt-get update
apt-get install -y ca-certificates curl gnupg
keyring=/usr/share/keyrings/coral-edgetpu.gpg
curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | gpg --dearmor --yes -o "$keyring"
echo "deb [signed-by=$keyring] https://packages.cloud.google.com/apt coral-edgetpu-stable main" \
  > /etc/apt/sources.list.d/coral-edgetpu.list
apt-get update
apt-get install -y python3-venv python3-numpy python3-opencv python3-pil "${runtime[@]}"
if [ "$kind" = pcie ]; then
  groupadd -f apex
  echo 'SUBSYSTEM=="apex", MODE="0660", GROUP="apex"' > /etc/udev/rules.d/65-apex.rules
  udevadm control --reload-rules
  echo "the PCIe driver loads after a reboot; check with: ls /dev/apex_0" >&2
fi
require_python
install_ssdkit tflite-runtime

if [ $# -eq 0 ]; then
  set -- --source 0 --serve 127.0.0.1:8080
fi
install_service "$model" --device "$device" "$@"
