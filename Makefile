# Stickpoint. `make help` lists the targets. `make run` and `make test` install
# what they need by themselves (Go modules, libchdb.so, clickhouse-server).
SHELL := /bin/bash
.DEFAULT_GOAL := help

MODULES   := pkg pkg/sdk proto services/ingest services/milestones services/health services/alerting services/stickpoint
BINARIES  := stickpoint ingest milestones health alerting
TOOL      := GOWORK=off go tool -modfile=$(CURDIR)/scripts/tools/go.mod
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/stickpoint/stickpoint/services/stickpoint/app.Version=$(VERSION)
# Flags for `make run`, e.g. make run ARGS="--data-dir /tmp/sp"
ARGS      ?=
FUZZTIME  ?= 20s

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: run
run: chdb build ## start everything in one process (embedded mode), data in ./.stickpoint
	./bin/stickpoint dev $(ARGS)

.PHONY: demo
demo: build ## against a running `make run`: load 200 simulated accounts, then show the alerts, risk, expansion, funnel and churn
	./bin/stickpoint demo $(ARGS)

.PHONY: build
build: ## build every binary into ./bin/
	@mkdir -p bin
	@for b in $(BINARIES); do go build -ldflags "$(LDFLAGS)" -o bin/$$b ./services/$$b/cmd/$$b || exit 1; done

.PHONY: test
test: test-deps check-modules ## run every test on both ClickHouse engines, benchmarks once, fuzzers briefly, lint
	@for m in $(MODULES); do echo "== go test $$m"; (cd $$m && go test -race -count=1 -timeout 20m ./...) || exit 1; done
	@$(MAKE) --no-print-directory bench-smoke
	@$(MAKE) --no-print-directory fuzz FUZZTIME=100000x
	@$(MAKE) --no-print-directory check-generated
	@$(MAKE) --no-print-directory lint

.PHONY: test-deps
test-deps: ## install what tests need: clickhouse-server (apt) and libchdb.so (npm)
	@scripts/install-test-deps.sh

.PHONY: chdb
chdb: ## fetch the embedded ClickHouse library (pinned, sha256-checked) into the user cache, once
	@scripts/fetch-chdb.sh

.PHONY: bench
bench: test-deps ## run the benchmarks for real
	@for m in $(MODULES); do (cd $$m && go test -run '^$$' -bench . -benchmem ./...) || exit 1; done

.PHONY: bench-smoke
bench-smoke: ## run each benchmark once so it keeps compiling and running
	@for m in $(MODULES); do (cd $$m && STICKPOINT_BENCH_DURATION=1s STICKPOINT_BENCH_EVENTS=20000 STICKPOINT_BENCH_ACCOUNTS=500 STICKPOINT_BENCH_DAYS=2 go test -run '^$$' -bench . -benchtime 1x ./... > /dev/null) || exit 1; done

.PHONY: fuzz
fuzz: ## run each fuzz target for FUZZTIME: a duration (default 20s) or a count like 100000x
	@scripts/fuzz.sh $(FUZZTIME)

.PHONY: lint
lint: ## golangci-lint (vet, staticcheck, errcheck, sloglint) and buf lint
	@for m in $(MODULES); do (cd $$m && $(TOOL) golangci-lint run --config $(CURDIR)/.golangci.yml ./...) || exit 1; done
	@cd proto && $(TOOL) buf lint

.PHONY: breaking
breaking: ## buf breaking against main
	@cd proto && $(TOOL) buf breaking --against '$(CURDIR)/.git#branch=main,subdir=proto'

.PHONY: generate
generate: ## regenerate the protobuf code with buf (plugins pinned in scripts/tools)
	@cd proto && rm -rf gen && GOWORK=off $(TOOL) buf generate

.PHONY: check-generated
check-generated: generate ## regenerate, then fail on any difference or untracked file
	@git diff --exit-code -- proto/gen || { echo "generated code is stale: run make generate and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- proto/gen)" || { echo "untracked generated files:" >&2; git status --porcelain -- proto/gen >&2; exit 1; }

.PHONY: tidy
tidy: ## sync the workspace's versions into every module, then go mod tidy each
	@go work sync
	@for m in $(MODULES) scripts/tools; do (cd $$m && GOWORK=off go mod tidy) || exit 1; done

.PHONY: check-modules
check-modules: ## each module builds alone (GOWORK=off) and is tidy
	@for m in $(MODULES); do \
		(cd $$m && GOWORK=off go build ./... && GOWORK=off go mod tidy -diff >/dev/null) || { echo "module $$m: not tidy or does not build alone: run make tidy" >&2; exit 1; }; \
	done

.PHONY: clean
clean: ## remove ./bin (not your data in ./.stickpoint)
	rm -rf bin
