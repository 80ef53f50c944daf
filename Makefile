# Fabric. `make` alone prints the targets.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
GO ?= go
BIN := bin/fabric
LAB ?= demo
CLUSTERS ?= 2
NODES ?= 3
WORKLOADS ?= 2
MODE ?= vxlan
RACKS ?= 2
BGP ?= 1
TEST_TIMEOUT ?= 30m

.PHONY: help deps build test generate lab lab-down bench clean

help: ## show this help
	@awk 'BEGIN{FS=":.*## "} /^[a-z-]+:.*## /{printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## install what is missing (Debian packages), quickly when present
	@.ci/deps.sh

build: ## build bin/fabric
	$(GO) build -o $(BIN) ./fabric/cmd/fabric

test: deps ## run every test: unit, fuzz seeds, and (as root) the lab tests
	$(GO) vet ./...
	$(GO) test -p 2 -timeout $(TEST_TIMEOUT) ./...

generate: ## rebuild the eBPF objects and their Go bindings (installs clang and libbpf headers)
	@.ci/deps.sh generate
	$(GO) generate ./...

lab: deps build ## bring up the lab (2 clusters x 3 nodes in 2 racks behind an FRR router, MODE=vxlan), check it, run the demo
	-./$(BIN) lab down --name $(LAB) >/dev/null 2>&1
	./$(BIN) lab up --name $(LAB) --clusters $(CLUSTERS) --nodes $(NODES) --workloads $(WORKLOADS) --mode $(MODE) \
		--racks $(RACKS) $(if $(filter 1,$(BGP)),--bgp)
	./$(BIN) lab check --name $(LAB)
	./$(BIN) lab demo --name $(LAB)

lab-down: build ## remove the lab
	./$(BIN) lab down --name $(LAB)

bench: build ## run the benchmarks against their baselines (writes bench/RESULTS.md)
	@.ci/deps.sh bench
	$(GO) run ./bench -out bench/RESULTS.md

clean: ## remove build output
	rm -rf bin
