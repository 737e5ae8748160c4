# Developer shortcuts; CI runs .ci/run.
.PHONY: all build test race fmt lint fuzz readme ci

GO ?= go

build:
	$(GO) build -o relay ./cmd/relay

test:
	$(GO) test -race ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

lint:
	test -z "$$(gofmt -l $$(git ls-files '*.go'))"
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	$(GO) mod tidy -diff

# Run each fuzz target for a short while.
fuzz:
	$(GO) test ./shared/subjects -run '^$$' -fuzz FuzzChannel -fuzztime 20s
	$(GO) test ./shared/subjects -run '^$$' -fuzz FuzzWatch -fuzztime 20s
	$(GO) test ./shared/auth -run '^$$' -fuzz FuzzCovers -fuzztime 20s
	$(GO) test ./fanout -run '^$$' -fuzz FuzzEnvelope -fuzztime 20s
	$(GO) test ./ingest -run '^$$' -fuzz FuzzLineFraming -fuzztime 20s
	$(GO) test ./ingest -run '^$$' -fuzz FuzzLen32Framing -fuzztime 20s
	$(GO) test ./ingest -run '^$$' -fuzz FuzzRawFraming -fuzztime 20s
	$(GO) test ./ingest -run '^$$' -fuzz FuzzHandshake -fuzztime 20s

# Print the README's configuration table.
readme:
	$(GO) run ./cmd/relay config -markdown

ci:
	bash .ci/run
