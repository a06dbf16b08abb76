#!/usr/bin/env bash
# Runs exactly what CI runs (.ci/run).
exec bash "$(dirname "${BASH_SOURCE[0]}")/.ci/run" "$@"
