# chatmodel-operator: `make demo` runs the main job, `make test` the whole suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PYTHONUNBUFFERED := 1

.PHONY: venv checkov aiperf test unit lint demo generate system-deps bench clean controlplane keda cluster cluster-down

venv: $(VENV)/.installed

# Checkov, for the security scan tier (tests/checkov): its own venv, since its pinned
# dependencies conflict with the operator's.
CHECKOV_VENV := .venv-checkov
CHECKOV_VERSION := 3.3.30
checkov: $(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION)

$(CHECKOV_VENV)/.installed-$(CHECKOV_VERSION):
	$(PY) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q --upgrade pip
	$(CHECKOV_VENV)/bin/pip install -q checkov==$(CHECKOV_VERSION)
	touch $@

# NVIDIA's aiperf in its own venv (its pinned dependencies are its own), run against
# `chatmodel serve` on 127.0.0.1 with the server's token counts, checked against the engine's.
AIPERF_VENV := .venv-aiperf
AIPERF_VERSION := 0.13.0
$(AIPERF_VENV)/.installed: Makefile
	$(PY) -m venv $(AIPERF_VENV)
	$(AIPERF_VENV)/bin/pip install -q --upgrade pip
	$(AIPERF_VENV)/bin/pip install -q aiperf==$(AIPERF_VERSION)
	touch $@

aiperf: venv $(AIPERF_VENV)/.installed
	$(BIN)/python bench/aiperf_check.py --aiperf $(AIPERF_VENV)/bin/aiperf

# torch is pinned to the CPU wheel first, so transformers never pulls a CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[serve,test]'
	touch $@

# Prometheus (with promtool) for the metrics tests: Debian's package, installed when missing.
system-deps:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  else echo "prometheus missing: run 'sudo apt-get install prometheus' (metrics tests will be skipped)"; fi; }

lint: venv
	$(BIN)/ruff check operator tests bench controlplane
	$(BIN)/ruff format --check operator tests bench controlplane
	$(BIN)/mypy
	$(BIN)/lint-imports

# KEDA, which only the autoscaling tier needs, builds (12 minutes cold) while the other tiers
# run; that tier runs once it is built.
test: venv checkov system-deps lint controlplane
	@$(CLUSTER) build --keda > .keda-build.log 2>&1 & keda=$$!; \
	$(BIN)/python -m pytest -q -p no:cacheprovider --ignore=tests/autoscaling; rc=$$?; \
	if wait $$keda; then $(BIN)/python -m pytest -q -p no:cacheprovider tests/autoscaling || rc=1; \
	else cat .keda-build.log; echo "KEDA's build failed"; rc=1; fi; exit $$rc

unit: venv
	$(BIN)/python -m pytest -q tests/unit

# The local control plane (controlplane/): kube-apiserver with admission and RBAC,
# kube-controller-manager, kube-scheduler, etcd, kwok's GPU nodes, all on 127.0.0.1, and KEDA's
# operator and metrics server for the autoscaling tier. Built from their Go modules into
# ~/.cache/chatmodel-operator (a no-op once built; KEDA's cold build is the longest part).
CLUSTER := $(PY) controlplane/cluster.py
controlplane:
	@$(CLUSTER) build

keda: controlplane
	@$(CLUSTER) build --keda

# Starts it, installs the chart with helm and runs the operator in the background under the
# chart's ServiceAccount; prints the two lines to eval (KUBECONFIG, PATH).
cluster: venv
	@$(CLUSTER) up --operator $(BIN)/chatmodel

cluster-down:
	@$(CLUSTER) down

# The README's commands for a first ChatModel, as it writes them, on the local cluster, then the
# data plane on a real Triton (CPU) with the README's curl commands. A cluster
# the demo started is stopped at the end; one `make cluster` started is left running.
demo: venv
	@echo "== planning every example =="
	@for f in examples/*.yaml; do $(BIN)/chatmodel plan $$f >/dev/null || exit 1; done
	@if $(CLUSTER) status; then stop=:; else stop="$(CLUSTER) down"; fi; \
	  trap "$$stop" EXIT; \
	  eval "$$($(CLUSTER) up --operator $(BIN)/chatmodel --build-seconds 8 --start-seconds 7)" && \
	  $(BIN)/python -m chatmodel_operator.demo --cluster

# Regenerate every committed generated file (CRD, its chart copy, API reference, dashboards).
generate: venv
	$(BIN)/python -m chatmodel_operator.generate

# Each prints a table; see docs/ (data-plane, autoscaling, control-plane) for the targets and
# the figures measured.
bench: venv system-deps
	$(BIN)/python bench/plan.py
	$(BIN)/python bench/reconcile.py
	$(BIN)/python bench/dataplane.py
	$(BIN)/python bench/autoscale.py

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(AIPERF_VENV) .pytest_cache .mypy_cache .ruff_cache
