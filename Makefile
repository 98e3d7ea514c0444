# toolgate -- see README.md.

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

GO ?= go
CONTROLLER_GEN := $(GO) tool controller-gen
# Tools kept out of the product's go.mod, in a module of their own.
GOLANGCI_LINT := $(GO) tool -modfile=hack/tools/go.mod golangci-lint
HELM := $(GO) tool -modfile=hack/helm/go.mod helm

.PHONY: all
all: build

##@ Generate

.PHONY: generate
generate: ## Generate deepcopy functions for the API types.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./apis/...

.PHONY: manifests
manifests: ## Generate the CRDs into config/crd/bases and the chart's crds/, the controller's RBAC rules into the chart, and config/ (and the chart's golden files, and the Prometheus rules file) from the chart.
	$(CONTROLLER_GEN) crd paths=./apis/... output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=toolgate-controller paths=./controller/... output:rbac:artifacts:config=charts/toolgate/files
	$(GO) test ./charts -count=1 -run 'TestConfigIsRenderedFromChart|TestTemplate|TestRulesFileIsRenderedFromChart' -update

##@ Build and test

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
# The commit toolgate version and toolgate_build_info name: HEAD, with
# -dirty when tracked files differ from it.
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)
# Where make release writes.
DIST ?= dist

.PHONY: build
build: ## Build every package and bin/toolgate.
	$(GO) build ./...
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/toolgate ./cmd/toolgate

.PHONY: image
image: ## Build the toolgate container image into bin/toolgate.tar (no Docker, no registry; load it with docker load -i or ctr images import).
	$(GO) run ./hack/images --only toolgate --out bin

.PHONY: release
release: ## Write a release into $(DIST) (VERSION=v0.9.0, SemVer): binaries for linux/amd64 and arm64, the image tarball, the chart, install.yaml, checksums.txt (see hack/release).
	$(GO) run ./hack/release --version "$(VERSION)" --commit "$(COMMIT)" --out "$(DIST)"

.PHONY: run
run: build ## Quickstart: a demo MCP server, a demo OIDC issuer and toolgate standalone on 127.0.0.1:8080.
	$(GO) run ./examples/quickstart/demo --toolgate bin/toolgate --config examples/quickstart

.PHONY: vet
vet: ## Run go vet.
	$(GO) vet ./...

.PHONY: lint
lint: ## Run golangci-lint with .golangci.yml (CI fails on any finding), on the product and on hack/benchreport.
	$(GOLANGCI_LINT) run ./...
	cd hack/benchreport && $(GO) tool -modfile=../tools/go.mod golangci-lint run -c ../../.golangci.yml ./...

##@ A real cluster (root; see "A real cluster on this machine" in README.md)

.PHONY: cluster-up
cluster-up: ## Start a single-node Kubernetes cluster in a network namespace of its own, and deploy toolgate into it.
	./hack/cluster up
	./hack/cluster deploy

.PHONY: e2e
e2e: ## Run the end-to-end suite (conformance/) against toolgate deployed in the local cluster, proxies as pods.
	./hack/e2e.sh

.PHONY: conformance
conformance: ## Run the upstream Gateway API conformance suite against toolgate (the local cluster, or $$KUBECONFIG's); VERSION=v0.9.0 names that version in the report, else devel.
	$(if $(filter command line environment,$(origin VERSION)),CONFORMANCE_VERSION="$(VERSION)" )./hack/conformance.sh

.PHONY: cluster-down
cluster-down: ## Stop that cluster and remove everything it made.
	./hack/cluster down

.PHONY: testbin
testbin: ## Build kube-apiserver, etcd and kubectl from source into the cache (first run only).
	./hack/testbin.sh

.PHONY: redis
redis: ## Make sure redis-server is installed.
	./hack/redis.sh

.PHONY: node
node: ## Install Node.js 22, the MCP TypeScript SDK and the MCP conformance suite into the cache (first run only).
	./hack/node.sh

.PHONY: hydra
hydra: ## Build Ory Hydra, the OAuth tests' authorization server, from source into the cache (first run only).
	./hack/hydra.sh

.PHONY: test
test: redis ## Build what the tests need, then run every test.
	KUBEBUILDER_ASSETS="$$(./hack/testbin.sh)"; export KUBEBUILDER_ASSETS; \
	TOOLGATE_NODE_DIR="$$(./hack/node.sh)"; export TOOLGATE_NODE_DIR; \
	TOOLGATE_HYDRA="$$(./hack/hydra.sh)"; export TOOLGATE_HYDRA; \
	$(GO) vet ./...; \
	$(GO) test -race -count=1 -timeout 30m ./...
# make bench's report program, a module of its own (its plotting library
# stays out of the product's go.mod).
	cd hack/benchreport && $(GO) vet ./... && $(GO) test -race -count=1 ./...

##@ Benchmarks (not run by make test)

.PHONY: bench
bench: redis ## Run every benchmark in sequence (bench-dataplane, bench-streams, bench-controller with edits timed at 250, 500 and 1,000 routes, hack/bench-limits.sh, hack/bench-authz.sh), print one table of ratios, and write the report with its charts into docs/bench (about 10 min on 2 cores; BENCH_QUICK=1: small sizes, the report into bin/bench/report; see hack/bench.sh).
	MAKE="$(MAKE)" ./hack/bench.sh

.PHONY: bench-dataplane
bench-dataplane: redis ## Race the data plane: a tools/call straight to a backend, through a bare httputil.ReverseProxy, and through toolgate with no policy, a policy in memory and on Redis; requests per second, latency and ratios (see hack/dataplane; ARGS="-rounds 1 -duration 3s" ...; ARGS="-profile DIR" also writes toolgate's CPU profile of each configuration's measured run).
	$(GO) test -tags dataplane -count=1 -timeout 60m -v -run TestDataPlaneRace ./hack/dataplane $(if $(ARGS),-args $(ARGS))

.PHONY: bench-controller
bench-controller: ## Measure the controller at scale on the real API server: memory, CPU per event, edit-to-proxy time, requests at rest (see hack/scale).
	KUBEBUILDER_ASSETS="$$(./hack/testbin.sh)"; export KUBEBUILDER_ASSETS; \
	$(GO) test -tags scale -count=1 -timeout 60m -v -run TestControllerAtScale ./hack/scale $(if $(ARGS),-args $(ARGS))

.PHONY: bench-streams
bench-streams: ## Measure the proxy memory and goroutines of open MCP event streams and sessions (0, 2,000, 8,000), toolgate beside a bare httputil.ReverseProxy and nginx (see hack/streams; ARGS="-runs 1 -profile DIR" ...).
	$(GO) test -tags streams -count=1 -timeout 60m -v -run TestStreamMemory ./hack/streams $(if $(ARGS),-args $(ARGS))

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-z-]+:.*##/ {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
