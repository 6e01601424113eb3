#!/usr/bin/env bash
# Fetches the stock OHIF viewer (npm's @ohif/app, its built dist/ only) into .cache/ohif-<version>/dist, so that
# tests/whole_day/test_stock_ohif.py can show that an unmodified OHIF displays a saved answer (the SEG and the TID 1500 report)
# with no code of ours. Only that test and the docs' picture need it; the server never serves it. Idempotent: returns
# at once when the folder is there. Needs npm (Debian's, from scripts/install_system.sh) and the npm registry.
set -euo pipefail
cd "$(dirname "$0")/.."
OHIF_VERSION=3.13.2
# SHA-512 of that tarball (the registry's dist.integrity, in hex): a tarball that differs is refused.
OHIF_SHA512=5997719a9986eeba85816f5924b71b82bdd70ad2e2d4a0cd3e831a798e4f3deea3e06e1f8c48e393271933a0ba664d85f3b04ac457e9abe8dde715d907d13c10
TARGET=.cache/ohif-$OHIF_VERSION
if [ -f "$TARGET/dist/index.html" ]; then echo "install_viewer: stock OHIF $OHIF_VERSION already in $TARGET/dist"; exit 0; fi
command -v npm >/dev/null || { echo "install_viewer: npm is missing: run bash scripts/install_system.sh" >&2; exit 1; }
# scripts/install.sh runs at every start: on a machine without the registry, give up in seconds, not npm's minutes.
if ! npm ping --silent --fetch-timeout=5000 --fetch-retries=0 >/dev/null 2>&1; then
  echo "install_viewer: the npm registry does not answer; stock OHIF $OHIF_VERSION not fetched" >&2; exit 1
fi
mkdir -p .cache
WORK=$(mktemp -d .cache/ohif-fetch.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
npm pack --silent --fetch-retries=1 --fetch-timeout=300000 --pack-destination "$WORK" "@ohif/app@$OHIF_VERSION" >/dev/null
TARBALL="$WORK/ohif-app-$OHIF_VERSION.tgz"
GOT=$(sha512sum "$TARBALL" | cut -d' ' -f1)
if [ "$GOT" != "$OHIF_SHA512" ]; then echo "install_viewer: @ohif/app@$OHIF_VERSION is not the pinned tarball ($GOT)" >&2; exit 1; fi
mkdir -p "$WORK/unpacked"
tar -xzf "$TARBALL" -C "$WORK/unpacked" --strip-components=1 --no-same-owner package/dist
rm -rf "$TARGET" && mkdir -p "$TARGET"
mv "$WORK/unpacked/dist" "$TARGET/dist"  # whole or not at all: the check above looks for dist/index.html
echo "install_viewer: fetched stock OHIF $OHIF_VERSION (npm @ohif/app) into $TARGET/dist ($(du -sh "$TARGET/dist" | cut -f1))"
