# crest: build, demo, test, bench, install, packages. See docs/admin-guide.md.
#
#   make                      build (cargo, release profile)
#   make install              install under PREFIX (default /usr/local), inside DESTDIR if set
#   make uninstall            remove what install put there (same PREFIX and DESTDIR)
#   make debs / make rpms     binary packages for PREFIX=/usr, left in packages/
#   make test                 the whole test suite
#   make soak                 200 checkpoint/restart rounds of a self-checking program
#   make bench                the benchmark (docs/benchmarks.md); BENCH_ARGS=--quick for a short run
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
DOCDIR ?= $(DATADIR)/doc/crest
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
ZSHCOMPDIR ?= $(DATADIR)/zsh/site-functions
FISHCOMPDIR ?= $(DATADIR)/fish/vendor_completions.d
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
CARGO ?= cargo
# Where the built commands and crest-gen are; NO_BUILD=1 installs them without running cargo
# (for an install as root after `make` as a user, and for the install test).
BUILD_DIR ?= target/release
NO_BUILD ?=
# Generated man pages and completions (crest-gen writes them from the commands' definitions).
GEN ?= target/gen
# Where `make debs` and `make rpms` leave the packages.
PKGDIR ?= packages
PKGSTAGE ?= target/pkgroot

BINS = cr_checkpoint cr_restart cr_info cr_check cr_run cr_slurm cr_coord
# libcr and its preload libraries: built as crest_libcr*, installed under BLCR's sonames, each
# with its link name (SLURM preloads the unversioned libcr_run.so).
LIBS = libcr libcr_run libcr_omit
HEADERS = crates/crest-libcr/include/libcr.h crates/crest-libcr/include/blcr_common.h crates/crest-libcr/include/blcr_errcodes.h
# libcr's manual, written by hand (the commands' are generated).
MAN3 = crates/crest-libcr/libcr.3
DOCS = README.md docs/admin-guide.md
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
INSTALL ?= install

.PHONY: all build gen demo test soak bench install uninstall stage debs rpms packages check-packages clean

all: build

build:
	$(CARGO) build --release --workspace

gen: $(if $(NO_BUILD),,build)
	$(BUILD_DIR)/crest-gen $(GEN)

demo: build
	./scripts/demo.sh

test: build
	$(CARGO) test --release --workspace -- --test-threads=2

soak: build
	CREST_SOAK_ROUNDS=$${CREST_SOAK_ROUNDS:-200} $(CARGO) test --release -p crest-cli --test soak -- --nocapture

bench: build
	./scripts/bench.sh $(BENCH_ARGS)

install: gen
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(DOCDIR) \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	for b in $(BINS); do \
		$(INSTALL) -m 0755 $(BUILD_DIR)/$$b $(DESTDIR)$(BINDIR)/$$b && \
		$(INSTALL) -m 0644 $(GEN)/man/man1/$$b.1 $(DESTDIR)$(MANDIR)/man1/$$b.1 && \
		$(INSTALL) -m 0644 $(GEN)/completions/bash/$$b $(DESTDIR)$(BASHCOMPDIR)/$$b && \
		$(INSTALL) -m 0644 $(GEN)/completions/zsh/_$$b $(DESTDIR)$(ZSHCOMPDIR)/_$$b && \
		$(INSTALL) -m 0644 $(GEN)/completions/fish/$$b.fish $(DESTDIR)$(FISHCOMPDIR)/$$b.fish || exit 1; \
	done
	$(INSTALL) -m 0644 $(DOCS) $(DESTDIR)$(DOCDIR)/
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	for l in $(LIBS); do \
		src=$$(ls $(BUILD_DIR)/lib$$(echo $$l | sed 's/^lib/crest_lib/').so $(BUILD_DIR)/deps/lib$$(echo $$l | sed 's/^lib/crest_lib/').so 2>/dev/null | head -n 1); \
		[ -n "$$src" ] || { echo "$$l: not built (run make)" >&2; exit 1; }; \
		$(INSTALL) -m 0755 $$src $(DESTDIR)$(LIBDIR)/$$l.so.0 && \
		ln -sf $$l.so.0 $(DESTDIR)$(LIBDIR)/$$l.so || exit 1; \
	done
	$(INSTALL) -m 0644 $(HEADERS) $(DESTDIR)$(INCLUDEDIR)/
	$(INSTALL) -d $(DESTDIR)$(MANDIR)/man3
	$(INSTALL) -m 0644 $(MAN3) $(DESTDIR)$(MANDIR)/man3/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' \
		crates/crest-libcr/libcr.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/libcr.pc
	chmod 0644 $(DESTDIR)$(PKGCONFIGDIR)/libcr.pc

uninstall:
	for b in $(BINS); do \
		rm -f $(DESTDIR)$(BINDIR)/$$b $(DESTDIR)$(MANDIR)/man1/$$b.1 $(DESTDIR)$(BASHCOMPDIR)/$$b \
			$(DESTDIR)$(ZSHCOMPDIR)/_$$b $(DESTDIR)$(FISHCOMPDIR)/$$b.fish; \
	done
	for d in $(DOCS); do rm -f $(DESTDIR)$(DOCDIR)/$$(basename $$d); done
	for l in $(LIBS); do rm -f $(DESTDIR)$(LIBDIR)/$$l.so.0 $(DESTDIR)$(LIBDIR)/$$l.so; done
	for h in $(HEADERS); do rm -f $(DESTDIR)$(INCLUDEDIR)/$$(basename $$h); done
	for m in $(MAN3); do rm -f $(DESTDIR)$(MANDIR)/man3/$$(basename $$m); done
	rm -f $(DESTDIR)$(PKGCONFIGDIR)/libcr.pc
	-rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null

# Packages are built from one staged install with PREFIX=/usr, so they hold exactly what
# `make install` installs. The packaging tools are installed when missing.
stage: $(if $(NO_BUILD),,build)
	rm -rf $(PKGSTAGE)
	$(MAKE) install NO_BUILD=1 PREFIX=/usr DESTDIR=$(CURDIR)/$(PKGSTAGE)

debs: stage
	./scripts/package.sh deb $(PKGSTAGE) $(VERSION) $(PKGDIR)

rpms: stage
	./scripts/package.sh rpm $(PKGSTAGE) $(VERSION) $(PKGDIR)

packages: debs rpms

# Installs each package into a scratch root and runs the installed cr_check there.
check-packages:
	./scripts/check-packages.sh $(PKGDIR) $(VERSION)

clean:
	$(CARGO) clean
	rm -rf $(PKGDIR)
