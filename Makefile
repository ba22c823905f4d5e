# Everything the project needs is installed by these targets: a fresh machine
# with Go runs `make test` (after .ci/run has put redis-server in place).
# `make help` lists the targets.

GO            ?= go
BIN           := $(CURDIR)/bin
export PATH   := $(BIN):$(PATH)

# Code generators, pinned. buf v1.74+ and grpc-gateway v2.32's plugins depend on
# module versions the Go module proxy does not serve, so these are the newest
# that install from it.
BUF_VERSION            := v1.73.0
PROTOC_GEN_GO_VERSION  := v1.36.12
PROTOC_GEN_GRPC_VERSION:= v1.6.0
GATEWAY_VERSION        := v2.31.0
# google/api/annotations.proto and http.proto come from this module's
# third_party/googleapis, since the Buf Schema Registry is out of reach.
GOOGLEAPIS_MODULE      := github.com/grpc-ecosystem/grpc-gateway@v1.16.0
# The Go linter (staticcheck.conf says which checks are off, and why).
STATICCHECK_VERSION    := v0.8.2
# grpcurl, for trying the API by hand as the README does.
GRPCURL_VERSION        := v1.9.4

.PHONY: help all build install image flagdoc run test torture torture-failover torture-faults fuzz vet fmt staticcheck tools third_party lint generate check-generated clean grpcurl bench

all: build ## build the server and the CLI into ./bin

help: ## list the targets
	@awk 'BEGIN { FS = ":.*## " } /^[a-z][a-z_-]*:.*## / { printf "  %-16s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

build: ## build the server into ./bin/orderexpiry and the CLI into ./bin/orderexpiryctl
	$(GO) build -o $(BIN)/orderexpiry ./cmd/server
	$(GO) build -o $(BIN)/orderexpiryctl ./cmd/orderexpiryctl

# The docs run both from PATH: orderexpiry and orderexpiryctl.
install: ## install the server as orderexpiry and the CLI as orderexpiryctl into $GOBIN (or ~/go/bin)
	$(GO) build -o $$($(GO) env GOBIN | grep . || echo $$($(GO) env GOPATH)/bin)/orderexpiry ./cmd/server
	$(GO) build -o $$($(GO) env GOBIN | grep . || echo $$($(GO) env GOPATH)/bin)/orderexpiryctl ./cmd/orderexpiryctl

# The container image, built without Docker (cmd/image, internal/image):
# FROM scratch, the static binary, user 65532, the CA certificates of this
# machine (Debian's ca-certificates). ./bin/image is an OCI image layout,
# ./bin/orderexpiry-image.tar a tarball for docker load / podman load.
image: ## build the container image: ./bin/image (OCI layout) and ./bin/orderexpiry-image.tar
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -o $(BIN)/linux/orderexpiry ./cmd/server
	$(GO) run ./cmd/image -binary $(BIN)/linux/orderexpiry -arch $$($(GO) env GOARCH) -layout $(BIN)/image -tar $(BIN)/orderexpiry-image.tar

# The flag table of docs/configuration.md, generated from
# the sub-configs of internal/server; `make test` fails while it is stale.
flagdoc: ## regenerate the flag table of docs/configuration.md
	$(GO) test -count=1 -run '^TestConfigurationDoc$$' ./internal/server -update

run: ## run the server (embedded store, or Redis with REDIS_URL=...)
	$(GO) run ./cmd/server

# The one test command: unit tests, the store conformance suite against a real
# redis-server (started by the tests) and the memory store, and end-to-end tests
# through the real gRPC and REST ports, all with the race detector.
test: vet staticcheck check-generated ## vet, staticcheck, the generated-code check, every test with -race, then the fuzz targets briefly
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) --no-print-directory fuzz

# The linearizability test (internal/e2e/linearizability_test.go), which
# `make test` runs once for 15 s with seed 1, run TORTURE_RUNS times for
# TORTURE_DURATION each, every run with a random seed, about 6 minutes in
# all. Each run prints its seed; a failing history prints it again, with
# LIN_SEED=<seed> to run it once more.
TORTURE_RUNS     ?= 5
TORTURE_DURATION ?= 60s
torture: ## run the linearizability test longer, over random seeds (TORTURE_RUNS=5 TORTURE_DURATION=60s)
	LIN_SEED=random LIN_DURATION=$(TORTURE_DURATION) $(GO) test -race -count=$(TORTURE_RUNS) -timeout 60m -v \
		-run '^TestLinearizability$$' ./internal/e2e

# The failover tests (Sentinel, Cluster, a stalled-replica failover, a
# partitioned master), RUNS times each under two CPU burners, with the sum of
# what they lost, doubled and refused. About 2 minutes a run on an idle
# 2-core machine. Both torture targets run internal/e2e/torture.sh: the load
# is cmd/contend's, each run's output goes to bin/<target>/run-N.log, and
# the last line counts the passes and failures and names what failed.
RUNS ?= 20
FAILOVER_TESTS := ^TestSentinelFailover$$ ^TestClusterFailover$$ ^TestStrictFailoverKeepsConfirmed$$ ^TestPartitionedMaster$$
torture-failover: ## run the failover tests RUNS times each under two CPU burners, and sum lost, doubled, refused (RUNS=20)
	NAME=torture-failover RUNS=$(RUNS) GO=$(GO) TESTS='$(FAILOVER_TESTS)' CPU=2 DISK=0 ./internal/e2e/torture.sh

# The fault suite (internal/e2e: TestFault*, TestGroupFaults, TestLogRewind*),
# with -race, FAULT_RUNS times under CONTEND_CPU goroutines that spin and
# CONTEND_DISK writers that fsync 1 MiB over and over in the tests'
# temporary directory (where their Redis keeps its AOF).
FAULT_RUNS   ?= 5
FAULT_TESTS  ?= ^(TestFault|TestGroupFaults$$|TestLogRewind)
CONTEND_CPU  ?= 2
CONTEND_DISK ?= 1
torture-faults: ## run the fault suite FAULT_RUNS=5 times under CPU and fsync load (CONTEND_CPU=2 CONTEND_DISK=1)
	NAME=torture-faults RUNS=$(FAULT_RUNS) GO=$(GO) TESTS='$(FAULT_TESTS)' CPU=$(CONTEND_CPU) DISK=$(CONTEND_DISK) RACE=1 ./internal/e2e/torture.sh

# Each fuzz target briefly, from its seed corpus in testdata/fuzz (go test
# -fuzz takes one target at a time), for a number of executions, about 10 s
# each on an idle machine: a -fuzztime duration races Go 1.26's fuzz
# coordinator at the deadline and can fail with "context deadline exceeded"
# with no failing input (go.dev/issue/75804, fixed in Go 1.27).
# FUZZTIME=5m (or 5000000x) for a longer hunt, for every target.
FUZZTIME ?=
FUZZ_TARGETS := ./internal/order:FuzzParseOffset:500000x ./internal/order:FuzzValidateID:500000x ./internal/gateway:FuzzCheckoutBody:30000x ./internal/gateway:FuzzDecodeCheckout:100000x
fuzz: ## run each fuzz target briefly (FUZZTIME=5m for longer)
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; rest=$${t#*:}; name=$${rest%%:*}; budget=$${rest#*:}; \
		budget=$${FUZZTIME:-$$budget}; \
		echo "fuzz $$name ($$pkg) for $$budget"; \
		$(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$$budget $$pkg; \
	done

vet: ## go vet, and fail if a file needs gofmt
	$(GO) vet ./...
	@out=$$(gofmt -l cmd internal client); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

fmt: ## gofmt every Go file in place
	gofmt -w cmd internal client

staticcheck: $(BIN)/staticcheck ## run the pinned staticcheck on every package
	$(BIN)/staticcheck ./...

tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/protoc-gen-grpc-gateway $(BIN)/protoc-gen-openapiv2 ## install the code generators into ./bin

# Each tool in ./bin depends on a stamp file named after its pinned version,
# bin/.versions/<tool>@<version>: bumping a version names a stamp that does
# not exist yet, so make installs that tool again rather than keep a stale
# binary. (The touch marks the binary newer than its stamp even when go
# install found it up to date and left it alone.)
STAMPS := $(BIN)/.versions

$(BIN)/buf: $(STAMPS)/buf@$(BUF_VERSION)
	GOBIN=$(BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	@touch $@
$(BIN)/protoc-gen-go: $(STAMPS)/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@touch $@
$(BIN)/protoc-gen-go-grpc: $(STAMPS)/protoc-gen-go-grpc@$(PROTOC_GEN_GRPC_VERSION)
	GOBIN=$(BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GRPC_VERSION)
	@touch $@
$(BIN)/protoc-gen-grpc-gateway: $(STAMPS)/protoc-gen-grpc-gateway@$(GATEWAY_VERSION)
	GOBIN=$(BIN) $(GO) install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@$(GATEWAY_VERSION)
	@touch $@
$(BIN)/protoc-gen-openapiv2: $(STAMPS)/protoc-gen-openapiv2@$(GATEWAY_VERSION)
	GOBIN=$(BIN) $(GO) install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@$(GATEWAY_VERSION)
	@touch $@
$(BIN)/staticcheck: $(STAMPS)/staticcheck@$(STATICCHECK_VERSION)
	GOBIN=$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	@touch $@
$(BIN)/grpcurl: $(STAMPS)/grpcurl@$(GRPCURL_VERSION)
	GOBIN=$(BIN) $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
	@touch $@

# A tool's new stamp replaces its stamps of other versions.
$(STAMPS)/%:
	@mkdir -p $(STAMPS)
	@rm -f $(STAMPS)/$(firstword $(subst @, ,$*))@*
	@touch $@

third_party: ## copy google/api's and google/rpc/status.proto from the pinned grpc-gateway module
	@dir=$$($(GO) mod download -json $(GOOGLEAPIS_MODULE) | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'); \
	mkdir -p third_party/googleapis/google/api third_party/googleapis/google/rpc && \
	install -m 0644 $$dir/third_party/googleapis/google/api/annotations.proto \
		$$dir/third_party/googleapis/google/api/http.proto third_party/googleapis/google/api/ && \
	install -m 0644 $$dir/third_party/googleapis/google/rpc/status.proto third_party/googleapis/google/rpc/

lint: tools third_party ## buf lint the protos
	$(BIN)/buf lint

generate: tools third_party ## regenerate the Go, gRPC, gateway and OpenAPI code from proto/
	rm -f proto/orderexpiry/v1/*.go && rm -rf internal/gen/openapi/orderexpiry
	$(BIN)/buf generate
	$(BIN)/buf lint

# Regenerates into the work tree and fails if anything changed, so the
# checked-in code always matches the protos.
check-generated: generate ## regenerate, and fail if the checked-in code differs
	@git diff --exit-code --stat -- proto internal/gen || { echo "generated code is stale: run make generate and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- proto internal/gen)" || { git status --porcelain -- proto internal/gen; echo "generated code is stale: run make generate and commit"; exit 1; }

clean: ## remove ./bin and third_party
	rm -rf $(BIN) third_party

grpcurl: $(BIN)/grpcurl ## install grpcurl into ./bin

# The benchmarks, each figure beside its baseline measured in the same run
# (see docs/benchmarks.md); 15 minutes or more. It starts its own redis-server
# processes, the built server and the baselines (cmd/bench/baseline). A
# subset: make bench BENCH=lateness,fanout (stages: lateness, lateness-a,
# lateness-b, throughput, memory, scale, fanout, cluster, groups, batch, list, bulk, capacity); a smoke
# test with small numbers: make bench QUICK=1; more flags (-pprof DIR,
# -naive=false, -markdown): make bench BENCHFLAGS='…'.
BENCH      ?=
BENCHFLAGS ?=
bench: ## run the benchmarks (BENCH=stage,… QUICK=1 BENCHFLAGS=…; see docs/benchmarks.md)
	$(GO) run ./cmd/bench -only '$(BENCH)' $(if $(QUICK),-quick) $(BENCHFLAGS)
