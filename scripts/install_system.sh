#!/usr/bin/env bash
# Debian packages for the PACS round trip, the OHIF browser test and the DICOM checks: Orthanc with its DICOMweb plugin
# (the example PACS the tests start on 127.0.0.1), Chromium (driven headless by Playwright) and dicom3tools (dciodvfy,
# the DICOM validator the SEG and SR tests run), and nodejs with npm (scripts/install_viewer.sh fetches the stock
# OHIF with it). Idempotent: returns at once when all are present. Needs root (or sudo) and Debian's apt.
set -euo pipefail
PACKAGES=(orthanc orthanc-dicomweb chromium dicom3tools nodejs npm)
missing=()
for package in "${PACKAGES[@]}"; do
  [[ "$package" =~ ^(nodejs|npm)$ ]] && command -v "${package%js}" >/dev/null && continue  # node/npm from elsewhere do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -eq 0 ]; then echo "install_system: ${PACKAGES[*]} already installed"; exit 0; fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# Where services may start, the orthanc package also starts its own service (port 8042); the tests don't use it.
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install_system: installed ${missing[*]}"
