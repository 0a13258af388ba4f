#!/usr/bin/env bash
# Install what the TPM tests need: tpm2-tools (tpm2_createak, tpm2_quote, ...) and swtpm
# (a software TPM 2.0, plus swtpm_setup from swtpm-tools). Idempotent: does nothing when the
# packages are already there. Debian/Ubuntu only (apt-get); anything else gets a clear error.
set -euo pipefail
exec bash "$(dirname "$0")/../../.ci/install-debs.sh" tpm2-tools swtpm swtpm-tools
