# sockproto: every target works on a fresh clone; run, test and lint install first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run local fuzz soak crowdbench test test-unit test-oldest test-prerelease trial pytest lint package-check docs screenshot clean

install: $(STAMP)

# Compat editable mode puts the checkout itself on sys.path, which is what
# lets twisted.plugin find twisted/plugins/ here (a plain editable install
# hides it).  The last step rebuilds twisted/plugins/dropin.cache.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
	$(PY) -m pip install -q --disable-pip-version-check \
	    --config-settings editable_mode=compat -e '.[test,dev]'
	$(PY) -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
	touch $(STAMP)

run: install
	$(PY) -m twisted --log-format text sockproto

# Every service from examples/local.toml, on loopback, with development certificates.
local: install
	test -f certs/ca.crt || $(VENV)/bin/sockproto cert certs
	mkdir -p -m 700 var
	$(PY) -m twisted --log-format text sockproto --config examples/local.toml

test: trial pytest

# The trial suite on the oldest Twisted that setup.cfg allows, in a venv of
# its own: where the private-API fence (sockproto/privateapi.py) could break.
OLDEST_TWISTED := $(shell sed -n 's/^ *twisted\[tls\]>=\([0-9.]*\).*/\1/p' setup.cfg)
OLDEST_VENV := .venv-oldest
OLDEST_STAMP := $(OLDEST_VENV)/.installed
$(OLDEST_STAMP): setup.cfg pyproject.toml
	test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
	$(OLDEST_VENV)/bin/python -m pip install -q --disable-pip-version-check \
	    --config-settings editable_mode=compat -e '.[test]' 'twisted[tls]==$(OLDEST_TWISTED)'
	touch $(OLDEST_STAMP)

test-oldest: $(OLDEST_STAMP)
	$(OLDEST_VENV)/bin/python -c "import twisted; print('Twisted', twisted.__version__)"
	$(OLDEST_VENV)/bin/trial -j2 tests

# The trial suite on Twisted's newest pre-release, where the index has one newer
# than the newest release: a break in the private-API fence is found before the
# release reaches users.  Says so and does nothing when there is none.
PRE_VENV := .venv-prerelease
test-prerelease: install
	@pre=$$($(PY) tests/twisted_prerelease.py) || exit $$?; \
	if [ -z "$$pre" ]; then echo "test-prerelease: no Twisted pre-release newer than the newest release; nothing to test"; exit 0; fi; \
	echo "test-prerelease: Twisted $$pre"; \
	test -x $(PRE_VENV)/bin/python || $(PYTHON) -m venv $(PRE_VENV); \
	$(PRE_VENV)/bin/python -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel && \
	$(PRE_VENV)/bin/python -m pip install -q --disable-pip-version-check \
	    --config-settings editable_mode=compat -e '.[test]' "twisted[tls]==$$pre" && \
	$(PRE_VENV)/bin/trial -j2 tests

# The edit loop: everything but the end-to-end files (no subprocesses), under trial.
UNIT_TESTS = $(filter-out %_e2e,$(basename $(subst /,.,$(wildcard tests/test_*.py))))
test-unit: install
	$(VENV)/bin/trial -j2 $(UNIT_TESTS)

trial: install
	$(VENV)/bin/trial -j2 tests

# -rs: say why a test was skipped (the browser test, without chromium).
pytest: install
	$(VENV)/bin/pytest -q -rs -p no:cacheprovider tests

lint: install
	$(VENV)/bin/ruff check sockproto twisted tests
	$(VENV)/bin/mypy sockproto twisted/plugins

# The sdist and the wheel as pip users get them: built with python -m build,
# the wheel installed in a fresh venv in a temporary folder and tried from
# there (plugins, a service, example-config); the sdist must hold the whole
# project.  Fast with pip's cache.
package-check: install
	$(PY) tests/package_check.py

# Hostile input against every service in one process (loopback, bounded):
# FUZZ_SECONDS (default 60) of garbage, SOAK_SECONDS (default 300) of mixed load.
FUZZ_SECONDS ?= 60
SOAK_SECONDS ?= 300
fuzz: install
	$(PY) -m tests.fuzz $(FUZZ_SECONDS)

soak: install
	$(PY) -m tests.soak $(SOAK_SECONDS)

# Crowds arriving at once (docs/scaling.rst): a benchmark, not a test; the
# server on CPU 0, the crowd (../shared/tools/crowd.c) on CPU 1.
# CROWDBENCH_ARGS="rooms --workers 2" for a cluster of two workers.
crowdbench: install
	$(PY) -m tests.crowdbench $(CROWDBENCH_ARGS)

# API documentation with pydoctor (Twisted's own generator); a warning fails it.
docs: install
	$(VENV)/bin/pydoctor --docformat=restructuredtext --project-name=sockproto \
	    --project-version=$$($(PY) -c 'import sockproto; print(sockproto.__version__)') \
	    --html-output=build/apidocs --warnings-as-errors -q sockproto
	@echo "API documentation in build/apidocs/index.html"

# The web chat's picture in the README, taken by the browser test (needs chromium and chromium-driver).
screenshot: install
	SOCKPROTO_SCREENSHOT=$(CURDIR)/docs/images/web-chat.png \
	    $(VENV)/bin/trial tests.test_chat_browser_e2e.BrowserChatTests.test_browsersAndALineClientChat

clean:
	rm -rf $(VENV) $(OLDEST_VENV) $(PRE_VENV) build dist *.egg-info _trial_temp* .pytest_cache .hypothesis .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -f twisted/plugins/dropin.cache
	rm -rf tests.test_*
