#!/bin/sh
# Install one image's lock file into a virtual environment and check that nothing it needs is
# missing. Every Dockerfile installs its lock with this script, and CI runs the same script on
# every lock (tests/test_images.py).
#   install-lock.sh VENV LOCK [uv pip install options...]
set -eu
venv=$1
lock=$2
shift 2
uv pip install --python "$venv/bin/python" --require-hashes --no-deps --requirements "$lock" "$@"
uv pip check --python "$venv/bin/python"
