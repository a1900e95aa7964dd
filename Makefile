# ThinkWatch. `make run` and `make test` work on a fresh clone (see README.md).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha1sum | cut -c1-12)
PG_URL ?= postgres://postgres@127.0.0.1:5432/test
REDIS ?= redis://127.0.0.1:6379/0

.PHONY: deploy-tools help install run test test-embedded test-production lint fmt typecheck check bench bench-converted lock clean chromium screenshots clickhouse soak

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "ThinkWatch needs Python 3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP) ## create .venv and install everything

# The MCP tests' upstreams: real MCP servers and an OAuth server from npm (tests only).
NPM_STAMP := tests/mcp/node_modules/.installed-$(shell sha1sum tests/mcp/package-lock.json | cut -c1-12)
$(NPM_STAMP): tests/mcp/package-lock.json
	npm ci --prefix tests/mcp --no-audit --no-fund --loglevel=error
	rm -f tests/mcp/node_modules/.installed-* && touch $(NPM_STAMP)

# The browser tests drive Debian's Chromium; Playwright never downloads browsers of its own.
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo -n)
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1
$(CHROMIUM):
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

chromium: $(CHROMIUM) ## install Debian's Chromium for the browser tests (if missing)

# The deployment tests' validators (tests/deploy): Compose v1 for `config`, HAProxy for
# `-c`, systemd-analyze for `verify`.
DEPLOY_TOOLS := /usr/bin/docker-compose /usr/sbin/haproxy /usr/bin/systemd-analyze
$(DEPLOY_TOOLS) &:
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose haproxy systemd

deploy-tools: $(DEPLOY_TOOLS) ## install the deployment tests' validators (docker-compose, haproxy, systemd-analyze)

clickhouse: ## install (if missing) and start the tests' ClickHouse on 127.0.0.1:19000
	bash deploy/clickhouse.sh

run: $(STAMP) ## gateway :3000 + console :3001 + worker, embedded mode (SQLite under var/)
	exec $(PY) -m thinkwatch.run

test: test-embedded test-production ## the whole suite: embedded mode, then PostgreSQL + Redis

test-embedded: $(STAMP) $(NPM_STAMP) $(CHROMIUM) $(DEPLOY_TOOLS) ## the suite on SQLite with in-process state
	bash deploy/clickhouse.sh
	rm -rf var/test-embedded
	THINKWATCH_DATA_DIR=var/test-embedded DATABASE_URL= REDIS_URL= $(PY) -m pytest $(PYTEST_ARGS)

test-production: $(STAMP) $(NPM_STAMP) $(DEPLOY_TOOLS) ## the suite on PostgreSQL and Redis (started if they are down)
	bash deploy/local-services.sh
	rm -rf var/test-production
	THINKWATCH_DATA_DIR=var/test-production DATABASE_URL=$(PG_URL) REDIS_URL=$(REDIS) $(PY) -m pytest -m "not browser" $(PYTEST_ARGS)

screenshots: $(STAMP) $(CHROMIUM) ## PNGs of the console's pages (1280x800) under docs/screenshots/
	rm -rf var/screenshots
	THINKWATCH_DATA_DIR=var/screenshots DATABASE_URL= REDIS_URL= THINKWATCH_SCREENSHOTS=docs/screenshots $(PY) -m pytest -q tests/browser

lint: $(STAMP) ## ruff (lint + format check) and the migrations check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	THINKWATCH_DATA_DIR=var/lint $(PY) manage.py makemigrations --check --dry-run

fmt: $(STAMP) ## format and fix what ruff can
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: $(STAMP) ## mypy on the package
	THINKWATCH_DATA_DIR=var/lint $(VENV)/bin/mypy thinkwatch accounts providers gateway quotas audit mcpgw

check: lint typecheck test ## everything CI runs

bench: $(STAMP) ## ../shared/bench against LiteLLM, the gateway as make run starts it
	bash bench/run.sh $(BENCH_ARGS)

bench-converted: $(STAMP) ## an Anthropic client to an OpenAI provider, against LiteLLM
	bash bench/provision.sh
	python3 bench/converted.py $(BENCH_ARGS)

lock: ## re-pin requirements.lock from pyproject.toml
	rm -rf /tmp/tw-lock && $(PYTHON) -m venv /tmp/tw-lock
	/tmp/tw-lock/bin/pip install -q --upgrade pip && /tmp/tw-lock/bin/pip install -q '.[dev]'
	/tmp/tw-lock/bin/pip freeze --exclude thinkwatch | grep -v '^-e' > requirements.lock

clean: ## remove the virtualenv and test data (keeps var/ data and secrets)
	rm -rf $(VENV) var/test-* var/lint var/screenshots var/browser-failures

soak: $(STAMP) ## 30 min of mixed traffic, gateway RSS sampled (SOAK_ARGS="--duration 600")
	$(PY) bench/soak.py $(SOAK_ARGS)
