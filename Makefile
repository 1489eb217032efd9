# Two set-up commands, both from a fresh clone:
#   make demo   creates .venv, installs hcstore, runs the demo on an embedded local cluster
#   make test   creates .venv, installs hcstore with its test extras, runs the static checks
#               (make lint) and then the whole test suite
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

test: lint system-deps
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/hcstore bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis .mypy_cache .ruff_cache
