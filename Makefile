# OpenCSP installer. `make help` lists the targets.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)

GO       ?= go
BIN      := bin/opencsp
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X github.com/opencsp/installer/internal/version.version=$(VERSION)
DEMO_DIR ?= .cache/demo

.PHONY: help build test deps unit lint fmt vet demo demo-down clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build bin/opencsp
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/installer

test: deps tools tools-test lint unit ## everything CI runs: Debian packages, e2e tools, lint, all tests

deps: ## install the Debian packages the tests and the demo need (when missing)
	@./scripts/deps.sh

unit: ## go test ./... (the stand-in tests need root and the e2e tools)
	$(GO) test -count=1 -timeout 30m ./...

lint: fmt vet ## gofmt check + go vet

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

demo: build ## the whole install on this machine (root): sandbox up + bin/opencsp install; stays up until Ctrl-C
	@./scripts/demo.sh $(DEMO_DIR)

demo-down: ## stop the demo's sandbox (also after a crash) and remove its files
	$(GO) run ./e2e/sandbox/cmd/sandbox down -dir $(DEMO_DIR)
	rm -rf $(DEMO_DIR) $(DEMO_DIR).log

clean: ## remove build output and caches
	rm -rf bin .cache

.PHONY: tools tools-test
tools: ## build the e2e tools (etcd, kube-apiserver, kubectl, Flux) into .cache/tools (cached; ~12 min cold)
	cd e2e/tools && $(GO) run ./cmd/buildtools -repo $(CURDIR)

tools-test: ## vet + test the e2e tools module (its own go.mod under e2e/tools)
	cd e2e/tools && $(GO) vet ./... && $(GO) test -count=1 ./...
