# Thin wrapper: every target first runs the idempotent set-up (tools/bootstrap.sh).
PY := .venv/bin/python
DEMO_DEVICES ?= 3
# The suite waits on hubs, devices and browsers far more than it computes: more workers than
# cores pays off (make test TEST_WORKERS=0 runs it in one process).
TEST_WORKERS ?= 4

.PHONY: setup demo demo-cluster test lint bench bench-cluster bench-firmware bench-console screenshots clean

setup:
	@bash tools/bootstrap.sh

# On a terminal the demo runs as its own job (bash -m), so Ctrl-C reaches the demo, which stops
# everything and exits 0, and not make itself (which would die of the signal: exit 130).
demo: setup
	@if [ -t 0 ]; then bash -mc 'bash tools/demo.sh $(DEMO_DEVICES); exit $$?'; \
	else bash tools/demo.sh $(DEMO_DEVICES); fi

# Cluster mode: a local RabbitMQ cluster, a hub against it and a simulated fleet on its nodes.
demo-cluster: setup
	@if [ -t 0 ]; then bash -mc 'bash tools/demo-cluster.sh $(DEMO_DEVICES); exit $$?'; \
	else bash tools/demo-cluster.sh $(DEMO_DEVICES); fi

# Tests marked `alone` measure a canary's latency against a budget: they run after the others,
# one at a time, so the other workers' load does not count against the hub they measure.
test: setup lint
	@$(PY) -m pytest -n $(TEST_WORKERS) -m "not alone"
	@$(PY) -m pytest -m alone

lint: setup
	@.venv/bin/ruff check hub tools tests
	@.venv/bin/ruff format --check hub tools tests
	@! git grep -n 'fmt: skip' -- hub tools tests || { echo "lint: '# fmt: skip' found: let ruff format lay it out"; exit 1; }
	@.venv/bin/mypy --no-error-summary

bench: setup
	@$(PY) -m tools.bench

bench-cluster: setup
	@$(PY) -m tools.bench.cluster $(ARGS)

bench-firmware: setup
	@$(PY) -m tools.bench_firmware

bench-console: setup
	@$(PY) -m tools.bench_console $(ARGS)

# A local RabbitMQ cluster (make cluster CLUSTER_NODES=5); Ctrl-C stops it.
.PHONY: cluster
cluster: setup
	@$(PY) -m tools.cluster --nodes $(or $(CLUSTER_NODES),3)

# The README's console screenshots (docs/fleet.png, docs/device.png), taken from the demo.
screenshots: setup
	@$(PY) -m tools.screenshots

clean:
	rm -rf build .venv node_modules
