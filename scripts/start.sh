#!/usr/bin/env bash
# Installs everything (scripts/install.sh) and starts the MONAI Label server with this app on port 8000.
#
# With no STUDIES it also starts a local PACS for both viewers (monailabel_app/demo/local_pacs.py): Orthanc on
# 127.0.0.1:${ORTHANC_PORT:-8043} only (in a network namespace of its own: monailabel_app/demo/loopback_forwarder.py),
# DICOM port off, storage in ${PACS_DIR:-pacs}/, filled on first start with synthetic CT,
# MR and DX series; MONAI Label reads it over DICOMweb, OHIF at http://127.0.0.1:8000/ohif/ and 3D Slicer both work,
# and stopping this script stops Orthanc. STUDIES=<folder> keeps a folder datastore (filled with the sample studies
# when empty); STUDIES=<DICOMweb URL> uses your PACS.
#
# With no arguments it starts the offline demo (tiny untrained reasoner + real LiteMedSAM); any arguments replace the
# demo options, e.g.:  bash scripts/start.sh --conf reasoner /models/MedReasoner-Soft-7B
# It listens on 127.0.0.1 unless HOST says otherwise (HOST=0.0.0.0 for the network: turn authentication on first,
# see the docs/security.md; the server warns at start). It serves this app's hardened routes
# (lib/server/asgi.py). Run it as a user of its own, not root (the docs/admin.md, "Running as its own user").
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ] && [ "${ALLOW_ROOT:-0}" != 1 ]; then
  cat >&2 <<'WARNING'
WARNING: scripts/start.sh runs as root. The server, the models it loads and the local PACS then get every right on
WARNING: this machine. Run it as a user of its own that owns only model/, logs/, pacs/ and the studies folder, e.g.
WARNING:   sudo -u medreasoner bash scripts/start.sh
WARNING: (docs/admin.md, "Running as its own user"). ALLOW_ROOT=1 starts as root without this warning.
WARNING
fi
bash scripts/install.sh
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MONAILABEL_PYEXE="$PWD/.venv/bin/python"
PY=.venv/bin/python
if [ "$#" -eq 0 ]; then set -- --conf demo true; fi
# Every --conf is checked against the one schema of start options (lib/options/start_options.py, docs/configuration.md)
# before anything starts: a typo stops here with one line, not a demo that runs instead or a failure at the first request
$PY -m lib.options.start_options check --conf models implicit_query "$@" || exit 2
ORTHANC_PID=""
if [ -z "${STUDIES:-}" ]; then
  PACS_DIR=${PACS_DIR:-pacs}
  ORTHANC_PORT=${ORTHANC_PORT:-8043}
  mkdir -p "$PACS_DIR"
  config=$($PY -m monailabel_app.demo.local_pacs config "$PACS_DIR" "$ORTHANC_PORT")
  # Orthanc has no bind address setting (it listens on every interface): it runs in a network namespace of its own
  # and only 127.0.0.1:$ORTHANC_PORT of this machine reaches it; where no namespace can be made, a warning says so
  $PY -m monailabel_app.demo.loopback_forwarder "$ORTHANC_PORT" "$PACS_DIR/orthanc.log" -- \
    "$(command -v Orthanc || echo /usr/sbin/Orthanc)" "$config" &
  ORTHANC_PID=$!
  trap 'kill "$ORTHANC_PID" 2>/dev/null || true; wait "$ORTHANC_PID" 2>/dev/null || true' EXIT
  STUDIES="http://127.0.0.1:$ORTHANC_PORT/dicom-web"
  $PY -m monailabel_app.demo.local_pacs fill "$STUDIES" "$PACS_DIR"
  if ! kill -0 "$ORTHANC_PID" 2>/dev/null; then  # another server on the port answered, not ours
    echo "local PACS: Orthanc did not start (see $PACS_DIR/orthanc.log); is port $ORTHANC_PORT taken? Set ORTHANC_PORT." >&2
    exit 1
  fi
  { read -r MONAI_LABEL_DATASTORE_USERNAME; read -r MONAI_LABEL_DATASTORE_PASSWORD; } \
    < <($PY -m monailabel_app.demo.local_pacs user "$PACS_DIR")
  export MONAI_LABEL_DATASTORE_USERNAME MONAI_LABEL_DATASTORE_PASSWORD
  echo "local PACS: Orthanc on 127.0.0.1:$ORTHANC_PORT (storage in $PACS_DIR/; log $PACS_DIR/orthanc.log)"
fi
case "$STUDIES" in
  http://*|https://*) ;;  # a PACS over DICOMweb, e.g. http://127.0.0.1:8042/dicom-web
  *) [ -n "$(ls -A "$STUDIES" 2>/dev/null)" ] || $PY -m monailabel_app.demo.sample_studies "$STUDIES" ;;
esac
# glibc gives each worker thread its own memory arena; two keep the server ~300 MB smaller after a busy hour
# (benchmarks/server_storm.py)
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
# torch makes its compile cache when imported, by default <tmp>/torchinductor_<user>: a name another local user can
# take first and fill. Ours is in model/ (and a start leaves nothing in the temp folder).
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-$PWD/model/torchinductor}"
# Progress bars (sam2's propagation, transformers' weight loading) are terminal art: in a server's log, one line each
# per request. TQDM_DISABLE=0 shows them (tqdm itself reads any non-empty value as "disable").
if [ "${TQDM_DISABLE:-1}" = 0 ]; then unset TQDM_DISABLE; else export TQDM_DISABLE=1; fi
# MONAI Label re-imports the app's lib/ when it loads main.py; the hardened routes are lib/ too and must stay one copy
export MONAI_LABEL_RELOAD_APP_LIB=false
# MONAI Label's logging configuration from logs/, not a new file left in the temp folder at every start
LOG_CONFIG=$($PY -m lib.server.log_config)
SERVER=(.venv/bin/monailabel start_server --app . --studies "$STUDIES" --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"
  --uvicorn_app lib.server.asgi:app --log_config "$LOG_CONFIG" --conf models implicit_query "$@")
if [ -z "$ORTHANC_PID" ]; then exec "${SERVER[@]}"; fi
# with the local PACS: the server runs as a child, so a stop (Ctrl-C, SIGTERM, a closed terminal) reaches both and
# Orthanc goes too; the script exits with the server's status
"${SERVER[@]}" &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true' INT TERM HUP QUIT
status=0
wait "$SERVER_PID" || status=$?
if [ "$status" -gt 128 ]; then  # a trapped signal ended `wait`, not the server: wait for the server's own status
  status=0
  wait "$SERVER_PID" || status=$?
fi
exit "$status"
