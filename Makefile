# make demo: rotate a throw-away database under live traffic (embedded defaults)
# make test: the whole suite, against private database servers it starts itself
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CODE   := $(wildcard src tests bench examples deploy)
STAMP  := $(VENV)/.installed-stamp
DEV    := $(VENV)/.dev-stamp

# The newest Django needs Python >= 3.12: the Django tests run once more there.
PY_NEWEST ?= $(shell for py in python3.13 python3.12 \
	$$(ls -d $$(pyenv root 2>/dev/null)/versions/3.1[23]*/bin/python3.1[23] 2>/dev/null | sort -rV); do \
	"$$py" -c pass 2>/dev/null && { command -v "$$py"; break; }; done)
NEWEST := .venv-newest
NEWEST_STAMP := $(NEWEST)/.installed-stamp

.PHONY: all venv demo test test-newest system-deps-test lint format bench soak package clean

all: lint test

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("credflip needs Python >= 3.11" if sys.version_info < (3, 11) else 0)'
	@PYTHON=$(PYTHON) tools/system-deps demo
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	@touch $(STAMP)

# Tests, linters and benchmarks need the dev extras; the demo only the runtime
# and PostgreSQL binaries for machines without PostgreSQL.
$(DEV): $(STAMP)
	@PYTHON=$(PYTHON) tools/system-deps test
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(DEV)

venv: $(DEV)

demo: $(STAMP)
	@tools/system-deps demo
	$(BIN)/credflip demo

# Four workers on two cores: many tests wait on servers and drains, and with
# four the two cores are about 80 % busy (2026-11-30, 1096 tests: -n 4 832 s,
# -n 5 799 s). Worksteal lets an idle worker take queued tests from a busy one,
# so the long drain tests do not pile up on one worker at the end (heavy tests
# first with load scheduling set up more module fixtures than it saved).
# The tests run in a new random order each time (pytest-randomly): no test may
# depend on another having run first. The seed is printed; SEED=N repeats an order.
# (`:=`, once: a recursive `?=` would run the shell again at each use.)
ifndef SEED
SEED := $(shell od -An -N2 -tu2 /dev/urandom | tr -d ' ')
endif
# The Django tests on the newest Django run alongside (their output follows the suite's).
# Their virtualenv is built first: built alongside, it took CPU from the suite.
test: $(DEV) $(NEWEST_STAMP)
	@echo "make: tests in random order, seed $(SEED) (make test SEED=$(SEED) repeats it)"
	@$(MAKE) --no-print-directory test-newest > $(NEWEST)/test.log 2>&1 & newest=$$!; \
	$(BIN)/pytest -q -n 4 --dist worksteal -p randomly --randomly-seed=$(SEED); suite=$$?; \
	wait $$newest; django=$$?; cat $(NEWEST)/test.log; \
	[ $$django -eq 0 ] || echo "make: the Django tests on the newest Django failed" >&2; \
	exit $$(( suite || django ))

# Debian packages the tests need (mysqlclient's build dependencies, server
# binaries for the private servers): installed with apt-get when make runs as
# root, otherwise one line says what to install.
$(DEV): | system-deps-test
system-deps-test:
	@tools/system-deps test

$(NEWEST_STAMP): pyproject.toml | system-deps-test
	@test -n "$(PY_NEWEST)" || { echo "make: the newest Django needs Python >= 3.12: set PY_NEWEST=/path/to/python3.12" >&2; exit 1; }
	$(PY_NEWEST) -m venv $(NEWEST)
	$(NEWEST)/bin/python -m pip install --quiet --upgrade pip
	$(NEWEST)/bin/python -m pip install --quiet -e '.[django]' 'Django>=6' mysqlclient waitress pytest pytest-timeout
	@touch $(NEWEST_STAMP)

# The Django tests on the newest Django and Python (the main suite has Django 4.2 LTS).
test-newest: $(NEWEST_STAMP)
	$(NEWEST)/bin/python -c 'import django, sys; print(f"newest: Django {django.__version__} on Python {sys.version.split()[0]}")'
	$(NEWEST)/bin/pytest -q -p no:cacheprovider tests/test_django.py

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
	rm -rf $(VENV) $(NEWEST) .pytest_cache .mypy_cache .ruff_cache .credflip
