#!/usr/bin/env bash
# Validates deploy/*.yaml offline against the Kubernetes API schemas that
# kubernetes-validate (PyPI) bundles, strictly (unknown fields fail).
# The NetworkAttachmentDefinition is a CRD without a bundled schema: its
# embedded CNI configuration is checked by cni/tests/deploy.rs with
# petrel-cni's own parser. scripts/bootstrap.sh installs the validator in
# $KV_VENV; cni/tests/deploy.rs runs this script.
#
#   scripts/cni/check-deploy.sh [K8S_VERSION]      (default 1.29.0)
set -Eeuo pipefail
cd "$(dirname "$0")/../.."
KV_VENV=${KV_VENV:-/opt/petrel-kv}
KV=$KV_VENV/bin/kubernetes-validate
[[ -x $KV ]] || { echo "check-deploy: $KV missing: run scripts/bootstrap.sh (installs kubernetes-validate)" >&2; exit 2; }
files=()
for f in deploy/*.yaml; do files+=("$f"); done
out=$("$KV" -k "${1:-1.29.0}" --strict "${files[@]}" 2>&1) || { echo "$out" >&2; exit 1; }
echo "$out"
# Anything but the CRD's missing schema is a failure.
if grep -v "Couldn't find schema for kind NetworkAttachmentDefinition" <<<"$out" | grep -q -E '^(WARN|ERROR)'; then
    echo "check-deploy: warnings above" >&2; exit 1
fi
