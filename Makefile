# bsfg: the single front door. `make help` lists the targets.
# Tools are installed (idempotently) by `make setup` (scripts/setup.sh); docs/tooling.md says what
# and from where. The BSFG_* variables below tell the Rust tests where those tools are.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
CARGO ?= cargo
STATIC_TARGET := x86_64-unknown-linux-musl
# Extra arguments for cargo test, e.g. make test TEST_ARGS='-- --nocapture'.
TEST_ARGS ?=
# make image: ZONE_DIR=dir provisions the image at build time; DEBUG=1 adds the serial console.
ZONE_DIR ?=
DEBUG ?= 0

export BSFG_NATS_SERVER := $(ROOT)/.tools/bin/nats-server
export BSFG_NODE_CLIENT := $(ROOT)/tests/clients/node/call.mjs
export BSFG_PY := $(ROOT)/.tools/venv/bin/python
export BSFG_PY_CLIENT := $(ROOT)/tests/clients/python/call.py

.PHONY: help setup build static lint check-units check-units-live test demo demo-local bench image image-test bundle reproducible-bundle upgrade-test clean distclean

help:
	@echo "make setup      install/verify tools: musl target, apt packages, nats-server, venv, npm, generated clients"
	@echo "make build      cargo build --release"
	@echo "make static     cargo build --release --target $(STATIC_TARGET) (static binary)"
	@echo "make lint       cargo fmt --check, clippy -D warnings, buf lint, shellcheck"
	@echo "make check-units  systemd units (verify, security exposure), nftables, sysctl, nats-server.conf"
	@echo "make check-units-live  static build, then both units under a real systemd in a container (root)"
	@echo "make test       setup, lint, check-units, cargo test --all-targets, then a summary (TEST_ARGS=... for cargo test)"
	@echo "make demo       (root) build or reuse the appliance image, boot it under QEMU as the IDMZ between a"
	@echo "                plant zone and an enterprise zone on this host, facts cross both ways, clean shutdown"
	@echo "make demo-local setup, build, scripts/demo.sh: the three-zone chain on loopback, no VM"
	@echo "make image      (root) the appliance firmware: out/bsfg-appliance-<version>-x86_64.img, .bmap,"
	@echo "                .manifest.json (ZONE_DIR=dir: provisioned; DEBUG=1: serial console); image/README.md"
	@echo "make image-test (root) the image under QEMU: provisioning, sandbox, facts across it, ports, tampering"
	@echo "make bundle     (root) the image, then a signed RAUC bundle (verity) of it for A/B upgrades:"
	@echo "                out/bsfg-appliance-<version>-x86_64.raucb (VERSION=, DEBUG=1, SIGNING_CERT=/SIGNING_KEY=,"
	@echo "                BUNDLE_EXTRA_CMDLINE=; image/README.md, \"Upgrades\")"
	@echo "make reproducible-bundle (root) the image and bundle here and from a copy of the checkout in"
	@echo "                another directory with another CARGO_HOME: identical, no build path in them"
	@echo "make upgrade-test (root) the upgrade runbook under QEMU: bundles released through the enterprise"
	@echo "                zone, installed by an operator's call, forged ones refused, power cuts, an"
	@echo "                interrupted install, a bundle that cannot become healthy rolls back by itself"
	@echo "make bench      setup, build, scripts/bench.sh"
	@echo "make clean      cargo clean and remove the generated client code"
	@echo "make distclean  clean, and remove .tools/ and node_modules/ too"

setup:
	@cd $(ROOT) && scripts/setup.sh

build:
	cd $(ROOT) && $(CARGO) build --release

static: setup
	@cd $(ROOT) && scripts/static.sh

lint: setup
	@cd $(ROOT) && scripts/lint.sh

check-units: setup
	@cd $(ROOT) && scripts/check-units.sh

check-units-live: setup static
	@cd $(ROOT) && scripts/check-units-live.sh

test:
	@cd $(ROOT) && scripts/test.sh $(TEST_ARGS)

# demo and image boot the x86_64 firmware only: no aarch64 cross-build on their way.
demo: setup
	@cd $(ROOT) && STATIC_TARGETS=x86_64 scripts/static.sh && image/demo.sh

demo-local: setup build
	@cd $(ROOT) && scripts/demo.sh

image: setup
	@cd $(ROOT) && STATIC_TARGETS=x86_64 scripts/static.sh && ZONE_DIR="$(if $(ZONE_DIR),$(abspath $(ZONE_DIR)))" DEBUG="$(DEBUG)" image/build.sh

image-test: image
	@cd $(ROOT) && image/test.sh

bundle: image
	@cd $(ROOT) && DEBUG="$(DEBUG)" image/bundle.sh

# The static binary here; the copy's (scripts/reproducible.sh) and both images and bundles are
# built by the script (image/README.md, "Reproducibility").
reproducible-bundle: setup
	@cd $(ROOT) && STATIC_TARGETS=x86_64 scripts/static.sh && image/reproducible-bundle.sh

# Builds what it needs itself (the DEBUG image, the bundles, in out/upgrade-test/) and runs the
# enterprise zone on this host beside the appliance.
upgrade-test: setup
	@cd $(ROOT) && STATIC_TARGETS=x86_64 scripts/static.sh && image/upgrade-test.sh

bench: setup build
	@cd $(ROOT) && scripts/bench.sh

clean:
	cd $(ROOT) && $(CARGO) clean
	rm -rf $(ROOT)/tests/clients/node/gen $(ROOT)/tests/clients/python/gen $(ROOT)/out

distclean: clean
	rm -rf $(ROOT)/.tools $(ROOT)/tests/clients/node/node_modules
