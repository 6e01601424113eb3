#!/usr/bin/env bash
# Installs everything (scripts/install.sh), writes synthetic sample studies, and starts the MONAI Label server with
# this app on port 8000. With no arguments it starts the offline demo (tiny untrained reasoner + real LiteMedSAM);
# any arguments replace the demo options, e.g.:  bash scripts/start.sh --conf reasoner /models/MedReasoner-Soft-7B
# It listens on 127.0.0.1 unless HOST says otherwise (HOST=0.0.0.0 for the network: turn authentication on first,
# see the README's Security section; the server warns at start). It serves this app's hardened routes
# (lib/server/asgi.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
STUDIES=${STUDIES:-sample_studies}
case "$STUDIES" in
  http://*|https://*) ;;  # a PACS over DICOMweb, e.g. http://127.0.0.1:8042/dicom-web
  *) [ -n "$(ls -A "$STUDIES" 2>/dev/null)" ] || .venv/bin/python -m monailabel_app.demo.sample_studies "$STUDIES" ;;
esac
if [ "$#" -eq 0 ]; then set -- --conf demo true; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" MONAILABEL_PYEXE="$PWD/.venv/bin/python"
# glibc gives each worker thread its own memory arena; two keep the server ~300 MB smaller after a busy hour
# (benchmarks/server_storm.py)
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
# MONAI Label re-imports the app's lib/ when it loads main.py; the hardened routes are lib/ too and must stay one copy
export MONAI_LABEL_RELOAD_APP_LIB=false
exec .venv/bin/monailabel start_server --app . --studies "$STUDIES" --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" \
  --uvicorn_app lib.server.asgi:app --conf models implicit_query "$@"
