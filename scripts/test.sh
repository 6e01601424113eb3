#!/usr/bin/env bash
# Installs everything if needed (scripts/install.sh, then requirements-test.txt), checks the code (ruff, the import
# contract in .importlinter), then runs the test suite in TEST_WORKERS processes (2). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
STAMP=.venv/.tests-installed-$(sha256sum requirements-test.txt | cut -c1-16)
if [ ! -f "$STAMP" ]; then
  PIP_DISABLE_PIP_VERSION_CHECK=1 .venv/bin/python -m pip install -q -r requirements-test.txt
  rm -f .venv/.tests-installed-* && touch "$STAMP"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
.venv/bin/ruff check .
.venv/bin/lint-imports --no-cache
# The manual as a site (mkdocs.yml): any warning (a broken link or anchor, a page left out of the navigation) fails.
SITE=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$SITE" || { rm -rf "$SITE"; exit 1; }
rm -rf "$SITE"
# Two test processes by default (docs/tests.md): one file at a time each, so a file's server serves all its tests.
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
