# edged: `make demo` runs the demo cell, `make test` runs the whole test suite (both set everything up).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test sysdeps venv bench fuzz clean install uninstall

demo: $(STAMP)
	$(VENV)/bin/edged demo

test: sysdeps $(STAMP)
	cd tests && ../$(VENV)/bin/pytest -q -p no:cacheprovider --durations=15

# System packages the tests run against (mosquitto broker, prometheus and promtool, socat pty pairs,
# cyclictest, systemd-analyze for the unit checks, strace for the no-I/O check of `edged check`).
sysdeps:
	@missing=""; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v socat >/dev/null || missing="$$missing socat"; \
	command -v cyclictest >/dev/null || missing="$$missing rt-tests"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v strace >/dev/null || missing="$$missing strace"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): setup.py pyproject.toml $(wildcard cext/*.pyx cext/*.pxd cext/*.pxi)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools==84.2.1 wheel cython==3.3.1
	$(PY) -m pip install -q --no-build-isolation -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

bench: $(STAMP)
	$(PY) bench/modbus_poll.py
	$(PY) bench/cycle_jitter.py
	$(PY) bench/forward.py
	$(PY) bench/sparkplug.py
	$(PY) bench/cnc.py
	$(PY) bench/s7_poll.py
	$(PY) bench/opcua.py

# Every fuzz/fuzz_*.py target for FUZZ_RUNS inputs each (coverage-guided with atheris; crashes are saved
# under fuzz/crashes/). Not part of `make test`, which runs a short seeded slice of each target.
FUZZ_RUNS ?= 1000000
fuzz: $(STAMP)
	nice $(PY) fuzz/harness.py --runs $(FUZZ_RUNS) $(FUZZ_TARGETS)

# Install as a service: a venv in $(DESTDIR)/opt/edged, /usr/local/bin/edged, the unit, /etc/edged/cell.toml
# (from the example, only when absent). `make uninstall` keeps /etc/edged and the spool. See docs/operations.md.
INSTALL_FLAGS ?=
install:
	$(PYTHON) -m edged.commands.install --destdir "$(DESTDIR)" --python $(PYTHON) $(INSTALL_FLAGS)

uninstall:
	$(PYTHON) -m edged.commands.install --destdir "$(DESTDIR)" --uninstall

clean:
	rm -rf build $(VENV) cext/*.c cext/*.so *.egg-info
