# Shared by raspberry_pi.sh and coral.sh (sourced, not run): the ssdkit
# virtualenv, the service user, the model and the systemd unit.

PREFIX=/opt/ssdkit
DEFAULTS=/etc/default/ssdkit-camera
SETUP_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() {
  echo "$(basename "$0"): $*" >&2
  exit 1
}

require_root() {
  [ "$(id -u)" -eq 0 ] || die "run as root: sudo bash $0 ..."
}

require_python() {
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
    || die "ssdkit needs Python 3.9 or newer; this system has $(python3 --version 2>&1)"
}

# A virtualenv that also sees the distribution's packages (numpy, OpenCV,
# Picamera2 come from apt, built for the board), then pip's: "$@" and ssdkit.
# SSDKIT_PACKAGE (a checkout or a wheel) replaces ssdkit from PyPI.
install_ssdkit() {
  python3 -m venv --system-site-packages "$PREFIX/venv"
  "$PREFIX/venv/bin/pip" install --upgrade pip
  "$PREFIX/venv/bin/pip" install "$@" "${SSDKIT_PACKAGE:-ssdkit}"
}

# install_service MODEL CAMERA_OPTIONS...: the model to $PREFIX/model, the
# options to $DEFAULTS (an existing one is kept: it may hold your edits),
# a system user "ssdkit" in the device groups, and the unit, enabled and started.
install_service() {
  local model=$1
  shift
  [ -f "$model" ] || die "$model: no such model file"
  install -d -m 755 "$PREFIX/model"
  install -m 644 "$model" "$PREFIX/model/"
  id ssdkit >/dev/null 2>&1 \
    || useradd --system --home-dir /var/lib/ssdkit --no-create-home --shell /usr/sbin/nologin ssdkit
  # video: cameras; plugdev: Coral USB (libedgetpu's udev rule); apex: Coral PCIe.
  for group in video plugdev apex; do
    if getent group "$group" >/dev/null; then usermod -a -G "$group" ssdkit; fi
  done
  if [ -f "$DEFAULTS" ]; then
    echo "keeping $DEFAULTS; the model is now $PREFIX/model/$(basename "$model")" >&2
  else
    cat > "$DEFAULTS" <<DEFAULTS
# Options of the ssdkit-camera service (see: $PREFIX/venv/bin/ssdkit camera --help).
# Apply with: sudo systemctl restart ssdkit-camera. Logs: journalctl -u ssdkit-camera
# --serve 0.0.0.0:8080 shows the preview to the whole network (no password).
SSDKIT_MODEL=$PREFIX/model/$(basename "$model")
SSDKIT_CAMERA_ARGS="$*"
DEFAULTS
  fi
  install -m 644 "$SETUP_DIR/ssdkit-camera.service" /etc/systemd/system/ssdkit-camera.service
  systemctl daemon-reload
  systemctl enable ssdkit-camera
  systemctl restart ssdkit-camera
  echo "ssdkit-camera is running: systemctl status ssdkit-camera; journalctl -u ssdkit-camera -f"
}
