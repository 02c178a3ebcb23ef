# rerankd — the commands a developer and CI use. Everything installs into .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install system-deps serve test lint audit format bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0   # the CPU build; first, so nothing pulls a CUDA one
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Servers the integration tests start themselves (Redis, nginx) and the browser the playground
# tests drive (Chromium, its driver, a CJK font for the screenshots): from Debian's packages.
SYSTEM_PACKAGES := redis-server nginx chromium chromium-driver fonts-wqy-zenhei
system-deps:
	@if ! command -v redis-server >/dev/null || ! command -v nginx >/dev/null \
	  || ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; fi; \
	fi

serve: install
	$(VENV)/bin/rerankd serve

# LiteLLM pins huggingface-hub<2, so its integration test runs it from a venv of its own.
LITELLM_VENV := .venv-litellm
$(LITELLM_VENV)/.installed:
	python3 -m venv --clear $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install --quiet 'litellm>=1.70'
	echo 'litellm>=1.70' > $@

# PyLate (the ColBERT reference) pins an older transformers / sentence-transformers stack, so
# tests/test_colbert.py runs it from a venv of its own: torch 2.13.0 (CPU) first, then the
# newest PyLate that resolves with it held by constraints.txt (later ones pin fast-plaid builds
# tied to older torch releases).
PYLATE_VENV := .venv-pylate
PYLATE := pylate==1.2.0
$(PYLATE_VENV)/.installed: constraints.txt
	python3 -m venv --clear $(PYLATE_VENV)
	$(PYLATE_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(PYLATE_VENV)/bin/python -m pip install --quiet -c constraints.txt '$(PYLATE)'
	echo '$(PYLATE)' > $@

test: install system-deps $(LITELLM_VENV)/.installed $(PYLATE_VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -p no:cacheprovider

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m mypy

# Known vulnerabilities in the installed dependencies fail, unless .ci/audit-allow.toml says why.
audit: install
	$(PY) .ci/audit.py

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	$(PIP) install --quiet -e '.[bench]'
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
