# gpt4batch developer tasks. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NSQ_APPS := nsqd nsqlookupd nsqadmin nsq_tail nsq_to_file
NSQ_BINS := $(addprefix $(BIN)/,$(NSQ_APPS))
PYTEST_ARGS ?=

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup test lint fmt schemas demo lock clean prometheus docker-engine wheelhouse compose-test

setup: $(VENV)/.installed $(NSQ_BINS)

$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

# NSQ v1.3.0 built from the Go module proxy through tools/nsq (see its go.mod).
$(NSQ_BINS) &: tools/nsq/go.mod tools/nsq/go.sum
	@mkdir -p $(BIN)
	cd tools/nsq && GOBIN=$(abspath $(BIN)) GOFLAGS=-mod=mod go install \
	  $(addprefix github.com/nsqio/nsq/apps/,$(NSQ_APPS))
	@touch $(NSQ_BINS)

# Prometheus (Debian package) for the observability tests.
prometheus: /usr/bin/prometheus
/usr/bin/prometheus:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus

# The compose test's engine (Debian's docker.io, dockerd 20.10), Debian's docker-compose (the
# compose implementation the test uses) and debootstrap (the stand-in images).
DOCKER_TOOLS := /usr/sbin/dockerd /usr/bin/docker-compose /usr/sbin/debootstrap
docker-engine: $(DOCKER_TOOLS)
$(DOCKER_TOOLS) &:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq docker.io docker-compose debootstrap

# Wheels of gpt4batch, its pinned dependencies and its build backend: the only package
# source of the image build when present (offline: `docker build --network none`).
wheelhouse: setup
	$(BIN)/python -m pip wheel -q -c constraints.txt -w deploy/wheelhouse . setuptools wheel

# compose.yaml on a real engine (tests/deploy/test_compose_up.py; also part of `make test`).
compose-test: setup prometheus docker-engine
	$(BIN)/python -m pytest -q tests/deploy/test_compose_up.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint prometheus docker-engine
	$(BIN)/python -m pytest $(PYTEST_ARGS)

schemas: setup
	$(BIN)/python -m gpt4batch.common.schemas --write schemas

# The demo needs neither Go (no NSQ) nor the test tools: gpt4batch and its pinned packages only.
demo: $(VENV)/.installed-app
	$(BIN)/gpt4batch demo

$(VENV)/.installed-app: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(BIN)/python -m pip install -q -e .
	@touch $@

lock:
	rm -rf /tmp/gpt4batch-lock && $(PYTHON) -m venv /tmp/gpt4batch-lock
	/tmp/gpt4batch-lock/bin/pip install -q -e '.[test]'
	/tmp/gpt4batch-lock/bin/pip freeze --exclude-editable --all | grep -v '^pip==' > constraints.txt.new
	@echo "review constraints.txt.new and move it over constraints.txt"

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

# The speed table of issue 11 (bench/table.py; BASE=<checkout with .venv> adds a side-by-side column).
.PHONY: bench
bench: setup
	$(BIN)/python bench/table.py $(if $(BASE),--base $(BASE))

# Issue 21's fleet TPM row: 3 callers over 2 nsqd at --tpm (about 3 minutes: the target
# is the second minute's throughput, so it is not in `make bench`'s budget).
.PHONY: bench-tpm
bench-tpm: setup
	$(BIN)/python bench/tpm_fleet.py

# Issue 22's scale row alone: a Batch API file at the API's limits (50,000 lines, ~200 MB)
# through the gateway with the official SDK beside ingest → sink, and the gateway's peak RSS
# (about 2 minutes; also a row of `make bench`).
.PHONY: bench-gateway
bench-gateway: setup
	$(BIN)/python bench/gateway_batch.py --scale

# Chaos (issue 9): 2,000 records, ~20% upstream faults, kill -9 of caller, downloader, sink
# and ingest, a graceful nsqd restart; prints the seed and the figures (CHAOS_SEED=N to repeat).
# Three cases in sequence, each with CHAOS_RECORDS and CHAOS_SEED (issue 19): the default,
# every service started before nsqd, and two nsqd sharing a node id; a summary line per case.
.PHONY: chaos
chaos: setup
	$(BIN)/python -m tests.support.chaos --all-cases --records $${CHAOS_RECORDS:-2000} $${CHAOS_SEED:+--seed $$CHAOS_SEED}

# The replayed attacks of tests/security/ (its README); ends with
# "red team: N attacks tried, M succeeded" (an attack succeeds when its test fails).
.PHONY: redteam
# Every test marked redteam (tests/support/redteam.py): tests/security/ and the attack
# tests beside the code they cover. The compose-up ones run with `make compose-test`.
REDTEAM_FILES = tests/security tests/deploy/test_compose.py tests/cli/test_feed.py
redteam: setup
	$(BIN)/python -m pytest $(REDTEAM_FILES) -m redteam $(PYTEST_ARGS)
