#!/usr/bin/env bash
# Installs what the tests need (the package with its test extras, espeak-ng, chromium, kcat, Java
# and Maven, Apache Kafka's jars), then runs lint, format check, strict types, the import
# contract, the whole suite on the embedded broker, and every Kafka-facing test (`-m kafka`)
# again on a real Apache Kafka that the suite starts itself. Extra args go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'

missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Apache Kafka's jars (deploy/kafka/pom.xml) into .cache/: once per clone, and a clear failure
# here, not in the middle of the suite, when Maven Central cannot be reached.
python3 -m teleprompter kafka fetch

ruff check .
ruff format --check .
mypy
lint-imports --no-cache

status=0
echo "== the whole suite, on the embedded broker"
python3 -m pytest --durations=15 "$@" || status=$?
if [ "$status" -eq 2 ]; then exit 2; fi  # interrupted, or a usage error: not worth a second run
echo "== the Kafka-facing tests, on Apache Kafka"
python3 -m pytest -m kafka --kafka-backend apache --durations=15 "$@" || status=$?
exit "$status"
