#!/usr/bin/env bash
# Installs the SDKs that tests/e2e/tests/sdk.rs and tests/emulator/tests/sdk_signers.rs run,
# pinned, beside their programs:
#   tests/sdk/python/.venv   alibabacloud-credentials and alibabacloud-sts20150401
#                            (requirements.txt, every dependency pinned)
#   tests/sdk/node/node_modules   @alicloud/credentials (package-lock.json, `npm ci`)
# Both are git-ignored. Needs python3 with the venv module, node and npm (on Debian 12:
# `apt-get install python3-venv nodejs npm`; .ci/run installs what is missing). Idempotent:
# an existing venv is reused. Each install is bounded (SDK_SETUP_TIMEOUT seconds, default 300).
set -euo pipefail
cd "$(dirname "$0")"
limit="${SDK_SETUP_TIMEOUT:-300}"

[ -x python/.venv/bin/python ] || python3 -m venv python/.venv
timeout "$limit" python/.venv/bin/pip install --quiet --disable-pip-version-check \
    --require-virtualenv -r python/requirements.txt
python/.venv/bin/python -c 'import importlib.metadata as m
for p in ("alibabacloud-credentials", "alibabacloud-sts20150401"): print(p, m.version(p))'

(cd node && timeout "$limit" npm ci --no-audit --no-fund --loglevel=error)
node -e 'console.log("@alicloud/credentials", require("./node/node_modules/@alicloud/credentials/package.json").version)'
