# OpenCSP installer. `make help` lists the targets.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)

GO       ?= go
BIN      := bin/opencsp
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/opencsp/installer/internal/version.version=$(VERSION)
DEMO_DIR ?= .cache/demo

.PHONY: help build test deps unit e2e lint fmt vet demo demo-appliance demo-down clean

# The end-to-end packages: they boot VM stand-ins, the sandbox, real kube-apiserver +
# Flux controllers and QEMU (root; `make tools`). `make unit` runs every other package.
E2E_PKGS := ./e2e/... ./stages/... ./internal/appliance/...
UNIT_PKGS = $$($(GO) list ./... | grep -vE '/(e2e|stages|internal/appliance)(/|$$)')

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

# Static (CGO_ENABLED=0): bin/opencsp is also the appliance ISO's /init,
# and image iso refuses a dynamically linked one.
build: ## build bin/opencsp (static)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/installer

test: deps tools tools-test lint unit e2e ## everything CI runs: Debian packages, e2e tools, lint, unit + e2e tests

deps: ## install the Debian packages the tests and the demo need (when missing)
	@./scripts/deps.sh

unit: ## the tests of every package outside the end-to-end ones (fast, most need no root)
	$(GO) test -count=1 -timeout 20m $(UNIT_PKGS)

e2e: ## the end-to-end tests: sandbox installs, fault + crash campaigns, stand-ins, Flux, QEMU boots (root, `make tools`)
	$(GO) test -count=1 -timeout 45m $(E2E_PKGS)

lint: fmt vet ## gofmt check + go vet

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

demo: build ## the whole install on this machine (root): sandbox up + bin/opencsp install; stays up until Ctrl-C
	@./scripts/demo.sh $(DEMO_DIR)

demo-appliance: build ## make demo with provision method appliance: opencsp image iso, then install boots the ISO
	@APPLIANCE=1 ./scripts/demo.sh $(DEMO_DIR)

demo-down: ## stop the demo's sandbox (also after a crash) and remove its files
	$(GO) run ./e2e/sandbox/cmd/sandbox down -dir $(DEMO_DIR)
	rm -rf $(DEMO_DIR) $(DEMO_DIR).log

clean: ## remove build output and caches
	rm -rf bin .cache

.PHONY: bench
# Every package with a Benchmark function (e2e/tools is its own module).
BENCH_PKGS = $$(git ls-files '*_test.go' | xargs grep -l '^func Benchmark' | grep -v '^e2e/tools/' | xargs -n1 dirname | sort -u | sed 's|^|./|')
bench: ## the Go benchmarks, e.g. the appliance ISO with go-diskfs vs xorriso (not part of make test)
	$(GO) test -run '^$$' -bench . -benchmem $(BENCH_PKGS)

.PHONY: tools tools-test
tools: ## build the e2e tools (etcd, kube-apiserver, kubectl, Flux) into .cache/tools (cached; ~12 min cold)
	cd e2e/tools && $(GO) run ./cmd/buildtools -repo $(CURDIR)

tools-test: ## vet + test the e2e tools module (its own go.mod under e2e/tools)
	cd e2e/tools && $(GO) vet ./... && $(GO) test -count=1 ./...
