# azd postprovision hook: write the deployed resources' settings into local.settings.json.
$ErrorActionPreference = 'Stop'
node (Join-Path $PSScriptRoot 'write-local-settings.mjs') @args
exit $LASTEXITCODE
