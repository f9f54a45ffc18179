# cb2-build. Every target is a thin wrapper over `python -m pipeline ...` (see README.md).
# The first target run sets up .venv (pinned by constraints.txt), idempotently. Rendering is CPU ray
# casting with Embree (bundled in the embreex wheel): no GL stack, no apt packages are needed.

SPECIES   ?= demo
OUT       ?= out
WORK      ?= work
SCHEDULER ?= processes
WORKERS   ?=
STAGE     ?=
FORCE     ?=
DEEP      ?=
SOURCE    ?= config
TWIN_FLAVOR ?= v2
TWIN_PORT ?=
TWIN_LATENCY_MS ?= 0
TWIN_HOSTILE ?=

# SOURCE=twin: the demo species through CaveSource against a twin of the real services (started and stopped by the
# build), serving work/demo/world; its own work dir and release unless WORK / OUT are given. TWIN_HOSTILE=SEED: the
# twin hides limits drawn from SEED (a work dir of its own, so nothing is reused from a kind build).
ifeq ($(SOURCE),twin)
  ifeq ($(origin WORK),file)
    WORK := work/twin-$(TWIN_FLAVOR)$(if $(TWIN_HOSTILE),-hostile$(TWIN_HOSTILE))
  endif
  ifeq ($(origin OUT),file)
    OUT := out-twin-$(TWIN_FLAVOR)
  endif
  SOURCE_FLAGS := --source twin --twin-flavor $(TWIN_FLAVOR) --twin-latency-ms $(TWIN_LATENCY_MS) \
                  $(if $(TWIN_PORT),--twin-port $(TWIN_PORT)) $(if $(TWIN_HOSTILE),--twin-hostile $(TWIN_HOSTILE))
endif

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.cb2-installed

RUN_FLAGS := --scheduler $(SCHEDULER) $(if $(WORKERS),--workers $(WORKERS)) $(if $(FORCE),--force)
COMMON    := --work $(WORK) --out $(OUT)

.PHONY: build stage split verify status preview demo-world test bench lint clean setup

build: $(STAMP)
	$(PY) -m pipeline build --species $(SPECIES) $(COMMON) $(RUN_FLAGS) $(SOURCE_FLAGS)

stage: $(STAMP)
	@test -n "$(STAGE)" || { echo "error: set STAGE=bank|fetch|render|split|shard" >&2; exit 2; }
	$(PY) -m pipeline stage $(STAGE) --species $(SPECIES) $(COMMON) $(RUN_FLAGS)

split: $(STAMP)
	$(PY) -m pipeline split $(COMMON) $(RUN_FLAGS)

verify: $(STAMP)
	$(PY) -m pipeline verify --out $(OUT) $(if $(DEEP),--deep --scheduler $(SCHEDULER)) $(if $(WORKERS),--workers $(WORKERS))

status: $(STAMP)
	$(PY) -m pipeline status $(COMMON)

preview: $(STAMP)
	$(PY) -m pipeline preview --species $(SPECIES) $(COMMON)

demo-world: $(STAMP)
	$(PY) -m pipeline demo-world --work $(WORK) $(if $(FORCE),--force)

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m benchmarks

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(OUT) $(WORK)
