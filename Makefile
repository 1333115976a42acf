# crest: build, demo, test, soak, bench, install.
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR = $(DESTDIR)$(PREFIX)/bin
CARGO ?= cargo
BINS = cr_checkpoint cr_restart cr_info

.PHONY: all build demo test soak bench install uninstall clean

all: build

build:
	$(CARGO) build --release --workspace

demo: build
	./scripts/demo.sh

test: build
	$(CARGO) test --release --workspace -- --test-threads=2

soak: build
	CREST_SOAK_ROUNDS=$${CREST_SOAK_ROUNDS:-200} $(CARGO) test --release -p crest-cli --test soak -- --nocapture

bench: build
	./scripts/bench.sh

install: build
	install -d $(BINDIR)
	for b in $(BINS); do install -m 0755 target/release/$$b $(BINDIR)/$$b; done

uninstall:
	for b in $(BINS); do rm -f $(BINDIR)/$$b; done

clean:
	$(CARGO) clean
