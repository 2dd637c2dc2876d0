# Every target sets itself up from a fresh clone: a .venv, torch (CPU build, pinned first so no
# CUDA wheel is pulled), then the package with its extras. Needs only python3 (3.10+), gcc, cmake.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
BENCH_JSON ?= bench-results/all.json
DEMO_OUT ?= runs/demo
DEMO_ARGS ?=
SANITIZE_TESTS ?= tests -m sanitize

.PHONY: install demo test bench sanitize sanitize-address sanitize-thread clean

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	touch $@

install: $(VENV)/.torch
	$(PY) -m pip install -q ".[test,ray]"

# The main job: the whole recipe (SFT, distillation with merging, RL, dual system) into $(DEMO_OUT);
# started again, it resumes where it stopped. DEMO_ARGS="--seed 1" or "--quick" pass through.
demo: install
	$(VENV)/bin/pangu-core pipeline --out $(DEMO_OUT) $(DEMO_ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) -m pip install -q ".[bench]" || echo "bench extra not installable here; baselines that need it say so in the JSON"
	$(VENV)/bin/pangu-core bench all --json $(BENCH_JSON)

# The sanitized core is installed into build/<kind>-site and put first on PYTHONPATH; Python itself
# is not instrumented, so the runtime is preloaded. Reports are written to build/<kind>-report.*
# (pytest captures stderr) and printed when a run fails.
sanitize: sanitize-address sanitize-thread

sanitize-address: install
	PANGU_SANITIZE=address $(PY) -m pip install -q --no-deps --upgrade \
	  --config-settings=build-dir=build/asan --config-settings=cmake.build-type=RelWithDebInfo \
	  --config-settings=install.strip=false --target build/asan-site .
	rm -f build/asan-report.*
	PYTHONPATH=build/asan-site LD_PRELOAD="$$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0:log_path=$(CURDIR)/build/asan-report \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$(CURDIR)/build/asan-report \
	  $(PY) -m pytest -p no:cacheprovider $(SANITIZE_TESTS) -o filterwarnings=ignore::DeprecationWarning \
	  || { cat build/asan-report.* 2>/dev/null; exit 1; }

sanitize-thread: install
	PANGU_SANITIZE=thread $(PY) -m pip install -q --no-deps --upgrade \
	  --config-settings=build-dir=build/tsan --config-settings=cmake.build-type=RelWithDebInfo \
	  --config-settings=install.strip=false --target build/tsan-site .
	rm -f build/tsan-report.*
	PYTHONPATH=build/tsan-site LD_PRELOAD="$$(gcc -print-file-name=libtsan.so)" \
	  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 log_path=$(CURDIR)/build/tsan-report suppressions=$(CURDIR)/tests/tsan.supp" \
	  $(PY) -m pytest -p no:cacheprovider $(SANITIZE_TESTS) -o filterwarnings=ignore::DeprecationWarning \
	  || { cat build/tsan-report.* 2>/dev/null; exit 1; }

clean:
	rm -rf build $(VENV) bench-results
