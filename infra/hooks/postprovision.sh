#!/bin/sh
# azd postprovision hook: write the deployed resources' settings into local.settings.json.
set -eu
node "$(dirname "$0")/write-local-settings.mjs" "$@"
