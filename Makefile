# weft — see README.md. Every target installs what it needs.
GO        ?= go
BIN       := $(CURDIR)/bin
K8S_BIN   ?= $(CURDIR)/.cache/k8s/v1.37.2
export WEFT_BIN := $(BIN)
export WEFT_K8S_BIN := $(K8S_BIN)

CMDS := $(notdir $(wildcard cmd/*))

.PHONY: all build deps k8s test unit e2e bench demo lint fmt clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

deps:
	@test/deps.sh

k8s:
	@test/k8s/build.sh $(K8S_BIN)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./test/...

# Unit tests and root-only integration tests (namespaces on the real kernel),
# then the end-to-end tests in the lab with a real control plane.
test: deps build k8s lint
	$(GO) test -count=1 ./...
	$(GO) test -count=1 -tags e2e -timeout 40m ./test/...

unit:
	$(GO) test -count=1 -short ./...

e2e: deps build k8s
	$(GO) test -count=1 -tags e2e -timeout 40m -v ./test/...

bench: deps build
	$(GO) run ./test/bench

demo: deps build k8s
	$(BIN)/weft-lab demo -f test/topologies/vxlan-3node.clab.yml

clean:
	rm -rf $(BIN)
