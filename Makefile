# Two set-up commands, both from a fresh clone:
#   make demo   creates .venv, installs hcstore, runs the demo on an embedded local cluster
#   make test   creates .venv, installs hcstore with its test extras, runs the static checks
#               (those of make lint) and the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo lint system-deps test bench clean

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

# The local fleet's root filesystem (debootstrap: mostly download, cached for later runs) is built in the
# background while ruff runs and the integration tests start; the fleet tests wait for it (playbooks/tests/fleet
# holds a lock). The integration tests run alone (they time failures and hedges). Last, the fleet tests run beside
# the Ray tests and then the unit tests, with mypy beside them: the fleet and Ray tests mostly wait (for hosts, SSH
# and Ansible; for Ray's processes), the unit tests and mypy time nothing. Every check runs once; any failure
# fails the target.
test: $(STAMP) system-deps
	playbooks/tests/fleet rootfs > $(VENV)/fleet-rootfs.log 2>&1 &
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m compileall -q $(PACKAGES)
	$(BIN)/python -m pytest -q -m "not ray" tests/integration
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/fleet > $(VENV)/fleet-tests.log 2>&1 & fleet=$$!; \
	$(BIN)/mypy > $(VENV)/mypy.log 2>&1 & types=$$!; \
	$(BIN)/python -m pytest -q -m ray; ray=$$?; \
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit; unit=$$?; \
	wait $$types; types_rc=$$?; echo "--- mypy"; cat $(VENV)/mypy.log; \
	wait $$fleet; fleet_rc=$$?; echo "--- tests/fleet"; cat $(VENV)/fleet-tests.log; \
	test $$ray -eq 0 && test $$unit -eq 0 && test $$types_rc -eq 0 && test $$fleet_rc -eq 0

bench: $(STAMP)
	$(BIN)/hcstore bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache
