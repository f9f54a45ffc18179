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
BURNERS   ?=
RUNS      ?=
DEEP      ?=
SOURCE    ?= config
TWIN_FLAVOR ?= v2
TWIN_PORT ?=
TWIN_LATENCY_MS ?= 0
TWIN_DRIFT ?=
TWIN_HOSTILE ?=
TWIN_HOSTILE_OFF ?=
TWIN_OUTAGE ?=
RECORD    ?=
comma := ,
TWIN_DRIFT_FLAGS = $(foreach d,$(subst $(comma), ,$(TWIN_DRIFT)),--twin-drift $(d))
TWIN_HOSTILE_FLAGS = $(if $(TWIN_HOSTILE),--twin-hostile $(TWIN_HOSTILE) \
                     $(foreach o,$(subst $(comma), ,$(TWIN_HOSTILE_OFF)),--twin-hostile-off $(o)))

# SOURCE=twin: the demo species through CaveSource against a twin of the real services (started and stopped by the
# build), serving work/demo/world; its own work dir and release unless WORK / OUT are given. TWIN_HOSTILE=SEED: the
# twin hides limits drawn from SEED and makes the real servers' faults (a work dir of its own, so nothing is reused
# from a kind build); TWIN_HOSTILE_OFF=a,b turns hostile options off (sim/twin/hostile.py HOSTILE_OPTIONS);
# TWIN_OUTAGE=N:S: the twin refuses connections for S seconds from its N-th request on.
ifeq ($(SOURCE),twin)
  ifeq ($(origin WORK),file)
    WORK := work/twin-$(TWIN_FLAVOR)$(if $(TWIN_HOSTILE),-hostile$(TWIN_HOSTILE))
  endif
  ifeq ($(origin OUT),file)
    OUT := out-twin-$(TWIN_FLAVOR)
  endif
  SOURCE_FLAGS := --source twin --twin-flavor $(TWIN_FLAVOR) --twin-latency-ms $(TWIN_LATENCY_MS) \
                  $(if $(TWIN_PORT),--twin-port $(TWIN_PORT)) $(TWIN_DRIFT_FLAGS) $(TWIN_HOSTILE_FLAGS) \
                  $(if $(TWIN_OUTAGE),--twin-outage $(TWIN_OUTAGE))
endif

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.cb2-installed

RUN_FLAGS := --scheduler $(SCHEDULER) $(if $(WORKERS),--workers $(WORKERS)) $(if $(FORCE),--force)
COMMON    := --work $(WORK) --out $(OUT)

.PHONY: build stage split verify status report preview demo-world test test-fast test-stress bench lint readme clean setup setup-browser preflight

# SOURCE=twin: check the twin (started and stopped here, TWIN_DRIFT=NAME[,NAME] drifts it) with the demo species.
PREFLIGHT_FLAGS := $(if $(RECORD),--record $(RECORD)) $(if $(filter twin,$(SOURCE)),--source twin \
                   --twin-flavor $(TWIN_FLAVOR) $(if $(TWIN_PORT),--twin-port $(TWIN_PORT)) $(TWIN_DRIFT_FLAGS) \
                   $(TWIN_HOSTILE_FLAGS))

build: $(STAMP)
	$(PY) -m pipeline build --species $(SPECIES) $(COMMON) $(RUN_FLAGS) $(SOURCE_FLAGS)

preflight: $(STAMP)
	$(PY) -m pipeline preflight --species $(SPECIES) --work $(WORK) $(if $(WORKERS),--workers $(WORKERS)) $(PREFLIGHT_FLAGS)

stage: $(STAMP)
	@test -n "$(STAGE)" || { echo "error: set STAGE=bank|fetch|render|split|shard" >&2; exit 2; }
	$(PY) -m pipeline stage $(STAGE) --species $(SPECIES) $(COMMON) $(RUN_FLAGS)

split: $(STAMP)
	$(PY) -m pipeline split $(COMMON) $(RUN_FLAGS)

verify: $(STAMP)
	$(PY) -m pipeline verify --out $(OUT) $(if $(DEEP),--deep --scheduler $(SCHEDULER)) $(if $(WORKERS),--workers $(WORKERS))

status: $(STAMP)
	$(PY) -m pipeline status $(COMMON)

report: $(STAMP)
	$(PY) -m pipeline report $(COMMON)

preview: $(STAMP)
	$(PY) -m pipeline preview --species $(SPECIES) $(COMMON)

demo-world: $(STAMP)
	$(PY) -m pipeline demo-world --work $(WORK) $(if $(FORCE),--force)

# two pytest-xdist workers, each test file on one of them (its module fixtures built once): the suite is paced by a
# few long files and one worker left a core idle (748 tests: 16.6 min with one worker, 9.4 min with two, 2 cores)
test: $(STAMP) setup-browser
	$(PY) -m pytest -n 2 --dist loadfile

# the unit tests alone (< 60 s on 2 cores), one pytest-xdist worker a core: every test not marked `slow` (builds,
# subprocesses, the generated world, long waits)
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" -n auto

# the suite RUNS times beside BURNERS CPU-bound processes (default: one per core); not run by CI
test-stress: $(STAMP)
	$(PY) -m tests.stress $(if $(BURNERS),--burners $(BURNERS)) $(if $(RUNS),--runs $(RUNS))

bench: $(STAMP)
	$(PY) -m benchmarks

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pipeline.invalidation --check

# the README's table of what a changed config key redoes, from the stages' declarations
readme: $(STAMP)
	$(PY) -m pipeline.invalidation

setup: $(STAMP)

# Debian's chromium for the browser tests (the report page, the local Neuroglancer); Playwright drives it. Where
# it cannot be installed (not root, no apt), those tests are skipped, each saying why.
setup-browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "setup-browser: could not install chromium (needs root and apt): the browser tests will be skipped" >&2

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf $(OUT) $(WORK)
