# unetdsl: `make demo` and `make test` work on a fresh machine with nothing but python3.
# The venv is rebuilt only when pyproject.toml or constraints.txt change (the stamp file).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_SPEC := specs/ddpm-cifar10.yaml

.PHONY: install demo test test-fast test-inductor test-heavy coverage fuzz bench check schema docs clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/unetdsl validate $(DEMO_SPEC)
	$(BIN)/unetdsl build $(DEMO_SPEC) -o out/ddpm-cifar10.pt

# everything but the inductor compiles (`make test-inductor`, ~2 minutes more on 2 cores) and the
# largest specs' slowest exports and compile (`make test-heavy`, ~10 minutes more); ~12-13 minutes on 2 cores
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal -m "not inductor and not heavy"

test-inductor: $(STAMP)
	$(BIN)/python -m pytest -q -m inductor

test-heavy: $(STAMP)
	$(BIN)/python -m pytest -q -m heavy

# everything but the torch.export/ONNX exports of the three large example specs (~5 of ~12 minutes)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow and not inductor and not heavy"

# line and branch coverage per module (the suite under pytest-cov; a few minutes more than `make test`)
coverage: $(STAMP)
	$(BIN)/python -m pytest -q -m "not inductor and not heavy" --cov=unetdsl --cov-branch --cov-report=term-missing:skip-covered

# the full reliability campaign (minutes to tens of minutes); CI runs a slice (tests/test_campaign_slice.py)
fuzz: $(STAMP)
	$(BIN)/python benchmarks/fuzz_campaign.py
	$(BIN)/python benchmarks/kill_test.py
	UNETDSL_FUZZ_SCALE=25 $(BIN)/python -m pytest -q tests/test_stored.py -k drawn
	$(BIN)/python benchmarks/fuzz_surface.py

# every speed and memory benchmark (~25 minutes on 2 cores); `benchmarks/run.py --table` rewrites the table in docs/measurements.md
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

check: $(STAMP)
	$(BIN)/ruff check unetdsl tests benchmarks
	$(BIN)/mypy unetdsl

schema: $(STAMP)
	$(BIN)/python -c "from unetdsl.schema import SHIPPED, schema_text; from unetdsl.fsutil import write_text_atomic; [write_text_atomic(p, schema_text()) for p in ('schemas/unetdsl.schema.json', SHIPPED)]"

# the generated language reference (a test fails when the committed copy is stale)
docs: $(STAMP)
	$(BIN)/python -c "from unetdsl.reference import reference_text; from unetdsl.fsutil import write_text_atomic; write_text_atomic('docs/language.md', reference_text())"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
