# Fabric. `make` alone prints the targets.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
BIN := bin/fabric
LAB ?= demo
CLUSTERS ?= 2
NODES ?= 3
TEST_TIMEOUT ?= 30m

.PHONY: help deps build test unit generate lab lab-down bench clean

help: ## show this help
	@awk 'BEGIN{FS=":.*## "} /^[a-z-]+:.*## /{printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## install what is missing (Debian packages), quickly when present
	@.ci/deps.sh

build: ## build bin/fabric
	$(GO) build -o $(BIN) ./fabric/cmd/fabric

test: deps ## run every test: unit, fuzz seeds, and (as root) the lab tests
	$(GO) vet ./...
	$(GO) test -p 2 -timeout $(TEST_TIMEOUT) ./...

unit: ## run the tests that need no root (lab tests skip)
	FABRIC_SKIP_LAB=1 $(GO) test ./...

generate: ## regenerate generated code (none yet: the eBPF bindings come with the datapath)
	$(GO) generate ./...

lab: deps build ## bring up the lab (2 clusters x 3 nodes) and run its check
	-./$(BIN) lab down --name $(LAB) >/dev/null 2>&1
	./$(BIN) lab up --name $(LAB) --clusters $(CLUSTERS) --nodes $(NODES)
	./$(BIN) lab check --name $(LAB)

lab-down: build ## remove the lab
	./$(BIN) lab down --name $(LAB)

bench: build ## run the benchmarks against their baselines (writes bench/RESULTS.md)
	@.ci/deps.sh bench
	$(GO) run ./bench -out bench/RESULTS.md

clean: ## remove build output
	rm -rf bin
