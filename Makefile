# Confidential MCP runtime — developer entry points.
# Every target installs what it needs (idempotently, caches under $(CMCP_CACHE)).
SHELL := /bin/bash
.DEFAULT_GOAL := help
export CMCP_CACHE ?= $(HOME)/.cache/cmcp
VENV = $(shell bash .ci/bootstrap.sh)
PY = $(VENV)/bin/python

.PHONY: help
help:  ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: venv
venv:  ## create/refresh the Python environment (outside the repository)
	@echo $(VENV)

.PHONY: lint
lint:  ## ruff + mypy
	@V=$(VENV); $$V/bin/ruff check . && $$V/bin/ruff format --check . && $$V/bin/mypy

.PHONY: unit
unit:  ## fast tests only (no cluster, no npm peers)
	@V=$(VENV); $$V/bin/python -m pytest -q -m "not k8s and not slow" tests

.PHONY: test
test:  ## everything CI runs: dependencies, lint, type checks, all tests
	@V=$(VENV); $$V/bin/ruff check . && $$V/bin/ruff format --check . && $$V/bin/mypy
	@$(MAKE) --no-print-directory security
	@V=$(VENV); $$V/bin/python -m cmcp_e2e build >/dev/null
	@V=$(VENV); $$V/bin/python -m pytest -q tests e2e/tests

.PHONY: fuzz
fuzz:  ## fuzz campaigns: 100 000 inputs per parser (CMCP_FUZZ_EXAMPLES to change)
	@V=$(VENV); CMCP_FUZZ_EXAMPLES=$${CMCP_FUZZ_EXAMPLES:-100000} $$V/bin/python -m pytest -q -p no:timeout tests/fuzz

# --- Kubernetes test control plane (e2e/; docs/kubernetes-test-cluster.md) -------------
# Binaries are built/fetched once into $(CMCP_CACHE)/k8s (progress on stderr).
.PHONY: k8s-build cluster-up cluster-down cluster-status e2e
k8s-build:  ## build/fetch the pinned control-plane binaries, print their paths
	@V=$(VENV); $$V/bin/python -m cmcp_e2e build

cluster-up:  ## start a local control plane in the background, print export KUBECONFIG=...
	@V=$(VENV); $$V/bin/python -m cmcp_e2e up

cluster-down:  ## stop the control plane started by cluster-up (from any shell)
	@V=$(VENV); $$V/bin/python -m cmcp_e2e down

cluster-status:  ## is the cluster-up control plane running?
	@V=$(VENV); $$V/bin/python -m cmcp_e2e status

e2e:  ## Kubernetes end-to-end tests (local control plane, or KUBECONFIG's cluster)
	@V=$(VENV); $$V/bin/python -m cmcp_e2e build >/dev/null
	@V=$(VENV); $$V/bin/python -m pytest -q e2e/tests

# -- gateway (issue 9) ------------------------------------------------------------------------
.PHONY: demo
demo:  ## dev-mode gateway in front of a real MCP server: allowed/denied/redacted calls, a verified claim
	@V=$(VENV); $$V/bin/python -m tests.demo.run_demo

.PHONY: bench bench-quick
bench:  ## all benchmarks (~15 min) -> docs/benchmarks.md + docs/bench/*.png (BENCH_ARGS: run_all options)
	@V=$(VENV); $$V/bin/python -m tests.bench.run_all $(BENCH_ARGS)

bench-quick:  ## the same with small counts, no operator run (a few minutes)
	@V=$(VENV); $$V/bin/python -m tests.bench.run_all --quick $(BENCH_ARGS)

# -- reliability and security (issue 7; docs/reliability.md) ---------------------------------
PACKAGES = $(wildcard verifier/cmcp_verifier sidecar/cmcp_sidecar operator/cmcp_operator)

.PHONY: security
security:  ## bandit over the packages, known-vulnerable dependencies (part of make test)
	@V=$(VENV); $$V/bin/bandit -q -c pyproject.toml -r $(PACKAGES)
	@V=$(VENV); $$V/bin/bandit -q -c pyproject.toml -s B101,B404,B603,B607 -r e2e/cmcp_e2e
	@V=$(VENV); $$V/bin/python .ci/dependency_audit.py

.PHONY: reliability
reliability:  ## the long campaigns: gateway and audit SIGKILL (50 each), upstream faults (200 rounds)
	@V=$(VENV); $$V/bin/python -m tests.reliability.kill_gateway --kills 50
	@V=$(VENV); $$V/bin/python -m tests.reliability.kill_audit --kills 50
	@V=$(VENV); $$V/bin/python -m tests.reliability.upstream_faults --rounds 200

.PHONY: soak
soak:  ## 30-minute soak (SOAK_MINUTES=N to change): RSS and descriptors must not grow > 10 %
	@V=$(VENV); $$V/bin/python -m tests.reliability.soak --minutes $${SOAK_MINUTES:-30} --out $(CMCP_CACHE)/soak
