# Two set-up commands, both from a fresh clone:
#   make demo   creates .venv, installs hcstore, runs the demo on an embedded local cluster
#   make test   creates .venv, installs hcstore with its test extras, runs the static checks
#               (those of make lint) and the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo lint system-deps fleet-rootfs test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,isal]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hcstore demo

# Static checks, configured in pyproject.toml: lint, formatting, types (strict for ec, placement, hcstore.wire).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# System packages the tests use: mkfs.xfs (xfsprogs) for the power-cut tests, which run as root on loop devices;
# promtool (prometheus) to check and unit-test the alert rules in monitoring/; systemd-nspawn (systemd-container),
# debootstrap and ssh for the local fleet the playbooks are tested on (playbooks/tests/fleet).
FLEET_PACKAGES := systemd-container debootstrap debian-archive-keyring openssh-client iproute2 util-linux
APT_INSTALL := apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
system-deps:
	command -v mkfs.xfs >/dev/null || ($(APT_INSTALL) xfsprogs)
	command -v promtool >/dev/null || ($(APT_INSTALL) prometheus)
	command -v systemd-nspawn >/dev/null && command -v debootstrap >/dev/null && command -v ssh >/dev/null \
		|| ($(APT_INSTALL) $(FLEET_PACKAGES))

# The tests start daemons by the hundred, and each would compile the packages' sources anew where the environment
# sets PYTHONDONTWRITEBYTECODE: compileall writes their bytecode first (only what changed; __pycache__ is ignored).
PACKAGES := hcstore ec placement ray_integration

# The venv (pip) and the system packages (apt) are installed side by side, and the local fleet's root filesystem
# (debootstrap: mostly download, cached for later runs) is built in the background as soon as debootstrap is there;
# the fleet tests wait for it (playbooks/tests/fleet holds a lock). Then, after ruff, the integration tests run a
# module at a time on each of two workers (pytest-xdist) beside the Ray tests of tests/ray: all of them mostly wait
# (on timers, daemons and Ray's processes). Last, the fleet tests (which mostly wait for hosts, SSH and Ansible) run
# beside the Ray examples (tests/integration/test_examples.py, each its own Ray cluster) and then the unit tests and
# the playbooks' static checks (which need no hosts), with mypy beside them. Every check runs once; any failure fails
# the target.
PLAYBOOK_CHECKS := tests/fleet/test_playbooks_static.py
test:
	$(MAKE) --no-print-directory --jobs=2 $(STAMP) fleet-rootfs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m compileall -q $(PACKAGES)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m ray tests/ray > $(VENV)/ray-tests.log 2>&1 & ray=$$!; \
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not ray" tests/integration; integration=$$?; \
	wait $$ray; ray_rc=$$?; echo "--- tests/ray"; cat $(VENV)/ray-tests.log; \
	test $$integration -eq 0 && test $$ray_rc -eq 0
	$(BIN)/python -m pytest -q -p no:cacheprovider --ignore=$(PLAYBOOK_CHECKS) tests/fleet \
		> $(VENV)/fleet-tests.log 2>&1 & fleet=$$!; \
	$(BIN)/mypy > $(VENV)/mypy.log 2>&1 & types=$$!; \
	$(BIN)/python -m pytest -q -p no:cacheprovider -m ray tests/integration; examples=$$?; \
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit $(PLAYBOOK_CHECKS); unit=$$?; \
	wait $$types; types_rc=$$?; echo "--- mypy"; cat $(VENV)/mypy.log; \
	wait $$fleet; fleet_rc=$$?; echo "--- tests/fleet"; cat $(VENV)/fleet-tests.log; \
	test $$examples -eq 0 && test $$unit -eq 0 && test $$types_rc -eq 0 && test $$fleet_rc -eq 0

# Started, not waited for: its log is in build/ (the venv may not exist yet).
fleet-rootfs: system-deps
	mkdir -p build
	playbooks/tests/fleet rootfs > build/fleet-rootfs.log 2>&1 &

bench: $(STAMP)
	$(BIN)/hcstore bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache
