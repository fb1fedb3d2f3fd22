#!/usr/bin/env bash
# Regenerates the image's pins from pyproject.toml: `bash requirements/lock.sh`.
#   runtime.txt  [project] dependencies (no extras): what the image installs
#   build.txt    [build-system] requires: the backend that builds authproxy's wheel
# Each file pins every package with the sha256 of every file PyPI has for that
# version (`pip install --require-hashes` refuses anything else), and holds
# markers for any Python >= 3.11 (--universal), so one file serves the
# Dockerfile's python:3.12 default and CI's Debian 3.11 base alike.
#
# Existing pins are kept where they still fit (a new dependency gets added,
# nothing else moves). To move pins on purpose, pass uv's options through:
#   bash requirements/lock.sh --upgrade                      # everything
#   bash requirements/lock.sh --upgrade-package aiohttp      # one package
# The tool (uv, pinned below) lives in a throwaway venv: it is not a dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9

tool=$(mktemp -d)
trap 'rm -rf "$tool"' EXIT
python3 -m venv "$tool/venv"
"$tool/venv/bin/pip" install -q "uv==$UV_VERSION"
compile() {  # compile INPUT OUTPUT [uv options...]
  local input=$1 output=$2
  shift 2
  "$tool/venv/bin/uv" pip compile "$input" --quiet --universal --python-version 3.11 \
    --generate-hashes --custom-compile-command "bash requirements/lock.sh" -o "$output" "$@"
}
compile pyproject.toml requirements/runtime.txt "$@"
python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' \
  >"$tool/build.in"
compile - requirements/build.txt --no-annotate "$@" <"$tool/build.in"
echo "requirements/runtime.txt and requirements/build.txt updated: review the diff, build the image (.ci/container)"
