# The two commands a newcomer needs: `make run` and `make test`. Both install what a fresh
# Debian machine lacks first.

CARGO ?= cargo
# The lint tools `make lint` installs when missing: versions known to build with rust-toolchain.toml.
CARGO_DENY_VERSION := 0.20.2
CARGO_MACHETE_VERSION := 0.9.2
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Where cargo puts binaries: target/ unless CARGO_TARGET_DIR or cargo's config say otherwise.
TARGET_DIR = $(shell $(CARGO) metadata --format-version 1 --no-deps --locked | \
	python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

.PHONY: print-target-dir run test remote-client smoke install build lint lint-tools fmt deps browser-deps keychain-deps check-deps clean bench bench-smoke bench-peers

## run: start stigmer-server with zero configuration on 127.0.0.1:50051 (~/.stigmer/stigmer.db)
run: deps
	$(CARGO) run --release --locked -p stigmer-server -- $(ARGS)

## test: formatting, lints, every unit and integration test (SQLite and, on a throwaway cluster
## that scripts/with-postgres.sh starts and stops, PostgreSQL; the console in headless chromium),
## then the README walk-through with grpcurl
test: deps browser-deps keychain-deps lint remote-client
	scripts/with-postgres.sh $(CARGO) test --workspace --locked
	scripts/grpcurl-smoke.sh "$(TARGET_DIR)/debug/stigmer-server"

## remote-client: the client built for remote servers only compiles neither the server, nor
## SQLite, nor protovalidate
remote-client:
	$(CARGO) check --locked -p stigmer-client --no-default-features
	@if $(CARGO) tree --locked -p stigmer-client --no-default-features -e normal | grep -E "rusqlite|protovalidate|stigmer-grpc"; then \
		echo "the remote-only client depends on the above"; exit 1; fi

## smoke: only the README walk-through with grpcurl, against a debug build of the server
smoke: deps
	$(CARGO) build --locked -p stigmer-server
	scripts/grpcurl-smoke.sh "$(TARGET_DIR)/debug/stigmer-server"

## install: the stigmer CLI and stigmer-server into ~/.cargo/bin (on PATH after rustup's setup)
install: deps
	$(CARGO) install --locked --path backend/cli
	$(CARGO) install --locked --path backend/server

## build: release binaries of stigmer-server and the stigmer CLI in $(TARGET_DIR)/release/
build: deps
	$(CARGO) build --release --locked -p stigmer-server -p stigmer

## bench: every benchmark case in release mode, figures on stdout and in bench/results/latest.json
## (see BENCHMARKS.md; < 10 min). The bench starts the stigmer-server built beside it.
bench: deps
	$(CARGO) build --release --locked -p stigmer-server -p stigmer-bench
	$(CARGO) run --release --locked -p stigmer-bench -- $(ARGS)

## bench-smoke: each case for a moment, so the harness cannot rot (run by CI)
bench-smoke: deps
	$(CARGO) build --locked -p stigmer-server -p stigmer-bench
	$(CARGO) run --locked -p stigmer-bench -- --smoke

## bench-peers: install etcd so that `make bench` measures it beside stigmer-server
bench-peers:
	@command -v etcd >/dev/null 2>&1 || { $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null; }

## lint: formatting, clippy, rustdoc warnings, the dependency tree's licenses, bans and sources
## (cargo-deny, deny.toml) and unused dependencies (cargo-machete)
lint: deps lint-tools
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --workspace --locked
	$(CARGO) deny --locked check --hide-inclusion-graph licenses bans sources
	$(CARGO) machete

## lint-tools: cargo-deny and cargo-machete, built from crates.io when missing (a few minutes,
## once; they land in ~/.cargo/bin)
lint-tools:
	@$(CARGO) deny --version >/dev/null 2>&1 || $(CARGO) install --locked cargo-deny@$(CARGO_DENY_VERSION)
	@$(CARGO) machete --version >/dev/null 2>&1 || $(CARGO) install --locked cargo-machete@$(CARGO_MACHETE_VERSION)

fmt:
	$(CARGO) fmt --all

## deps: a protoc binary for prost-protovalidate-types' build script, sqlite3 for inspection,
## openssl for the cloud walk-through's certificate, curl for its JSON calls
deps:
	@command -v protoc >/dev/null 2>&1 && command -v sqlite3 >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1 && command -v curl >/dev/null 2>&1 || { \
		echo "installing protobuf-compiler, sqlite3, openssl and curl (Debian packages)"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler sqlite3 openssl curl >/dev/null; }
	@rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt

## browser-deps: headless chromium and its WebDriver, for the console's browser tests
## (backend/server/tests/console.rs), which fail rather than skip without them
browser-deps:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
		echo "installing chromium and chromium-driver (Debian packages) for the console's browser tests"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

## keychain-deps: a D-Bus session bus and a Secret Service (gnome-keyring), for the test that
## keeps the master key in the OS keychain (backend/server/tests/start_options.rs)
keychain-deps:
	@command -v dbus-daemon >/dev/null 2>&1 && command -v gnome-keyring-daemon >/dev/null 2>&1 || { \
		echo "installing dbus-daemon and gnome-keyring (Debian packages) for the keychain test"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dbus-daemon gnome-keyring >/dev/null; }

clean:
	$(CARGO) clean

print-target-dir:
	@echo "$(TARGET_DIR)"
