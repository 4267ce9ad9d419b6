# Makefile - build, run and test the FastCGI signaling responder.
#   make            build build/signal-fcgi
#   make run        install what is missing, build, run lighttpd on $(PORT) in the foreground
#                   (SERVER=nginx or SERVER=apache: that front server instead;
#                   STORE=postgres: on a local PostgreSQL it starts; PG_URL=postgresql://...: on yours)
#   make cluster    NODES=3 nodes on PORT+1.. on one local PostgreSQL (or PG_URL), an nginx balancer on PORT
#                   (the local PostgreSQL's data: var/pg/, or PG_DIR=DIR; runtime files: var/run/, or RUNROOT=DIR)
#   make test       install what is missing, build, run every test (TAP through prove)
#   make bench      benchmarks (see bench/)
#   make deb        the Debian package, build/deb/signal-fcgi_VERSION_amd64.deb
#   make shared-hosting  the folder to upload to a shared host (build/shared-hosting/signal/)
#   make clean

PORT     ?= 8080
BIND     ?= 127.0.0.1
DB       ?= $(CURDIR)/var/signal.db
ARGS     ?=
PROCS    ?= 1
WORKERS  ?= 1
SERVER   ?= lighttpd
STORE    ?= sqlite
PG_URL   ?=
PGPORT   ?=
# The local PostgreSQL's data directory (empty: var/pg/, see tools/run-postgres.sh).
PG_DIR   ?=
STORE_ARGS ?=
# Runtime files (sockets, pid files) of one instance: several `make run`
# on different ports never share a socket; `make cluster` puts its nodes'
# and its balancer's in RUNROOT/PORT+i/ and RUNROOT/PORT/.
RUNROOT  ?= $(CURDIR)/var/run
RUNDIR   ?= $(RUNROOT)/$(PORT)
NODES    ?= 3

CC       ?= cc
CFLAGS   ?= -O2 -g
WARN      = -std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wformat=2 -Wno-format-nonliteral
PG_CFLAGS := $(shell pkg-config --cflags libpq 2>/dev/null || echo -I/usr/include/postgresql)
CPPFLAGS += -D_FORTIFY_SOURCE=2 -Ifcgi -Ibuild $(PG_CFLAGS)
LDLIBS    = -lfcgi -ljson-c -lsqlite3 -lpq -lcrypto -lwslay -lhttp_parser -lpthread
SAN       = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

# Debian packages the build, the service and the tests need.
DEB_BUILD = gcc make libc6-dev pkg-config libfcgi-dev libjson-c-dev libsqlite3-dev libssl-dev \
            libwslay-dev libhttp-parser-dev libpq-dev
DEB_RUN   = lighttpd curl jq $(if $(filter nginx,$(SERVER)),nginx-light) $(if $(filter apache,$(SERVER)),apache2) \
            $(if $(filter postgres,$(STORE)),postgresql-15)
DEB_FUZZ  = clang libclang-rt-14-dev
DEB_PKG   = debhelper help2man lintian fakeroot dpkg-dev
DEB_TEST  = curl jq perl sqlite3 valgrind python3 python3-websocket libfcgi-bin openssl nodejs nginx-light \
            prometheus apache2 libapache2-mod-fcgid apache2-suexec-pristine coturn postgresql-15 postgresql-client-15

# The responder, one object per subsystem, by layer (fcgi/ folders, top down:
# transport -> deliver -> core -> store; base is used by all; see
# docs/architecture.md). Objects are named after their source, flat in build/.
BASE_OBJS      = xalloc.o buf.o util.o log.o error.o config.o metrics.o
STORE_OBJS     = store.o store_sqlite.o store_pg.o schema.o schema_pg.o
CORE_LAYER     = jsonv.o ratelimit.o core.o
DELIVER_OBJS   = loop.o bell.o fcgirec.o evfmt.o marks.o held.o group.o maint.o
TRANSPORT_OBJS = httpparse.o fconn.o web.o ws.o
CORE_OBJS = $(BASE_OBJS) $(STORE_OBJS) $(CORE_LAYER)
SRV_OBJS  = $(CORE_OBJS) $(DELIVER_OBJS) $(TRANSPORT_OBJS) main.o
SRC_DIRS  = fcgi fcgi/base fcgi/store fcgi/core fcgi/deliver fcgi/transport
vpath %.c $(SRC_DIRS)

OBJS      = $(addprefix build/,$(SRV_OBJS))
SAN_OBJS  = $(addprefix build/san/,$(CORE_OBJS))
SAN_SRV   = $(addprefix build/san/,$(SRV_OBJS))
HEADERS   = $(wildcard $(addsuffix /*.h,$(SRC_DIRS)))
SOURCES   = $(wildcard $(addsuffix /*.c,$(SRC_DIRS)))
SCHEMA    = $(sort $(wildcard schema/*.sql))
SCHEMA_PG = $(sort $(wildcard schema/postgres/*.sql))

.PHONY: all run run-front cluster test unit integration bench fuzz clean deps deps-test deps-fuzz deps-pkg install install-deb deb shared-hosting

all: build/signal-fcgi

build/signal-fcgi: $(OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(OBJS) $(LDLIBS)

build/%.o: %.c $(HEADERS) | build
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

build/schema.o: build/schema.c
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

build/schema_pg.o: build/schema_pg.c
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

# The SQL migrations, in file-name order, as C strings named $(1): SQLite's
# (schema/*.sql: migration N sets PRAGMA user_version = N) and PostgreSQL's
# (schema/postgres/*.sql: N is the row of signal_schema).
define schema_c
	@{ echo '/* generated from SQL files by the Makefile */'; \
	   echo 'const char *const $(1)[] = {'; \
	   for f in $(2); do \
	     sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $$f; echo ','; \
	   done; \
	   echo '};'; \
	   echo 'const int $(1:migrations=migration_count) = sizeof $(1) / sizeof $(1)[0];'; \
	 } > $@
endef

build/schema.c: $(SCHEMA) | build
	$(call schema_c,schema_migrations,$(SCHEMA))

build/schema_pg.c: $(SCHEMA_PG) | build
	$(call schema_c,pg_schema_migrations,$(SCHEMA_PG))

build/san/%.o: %.c $(HEADERS) | build
	@mkdir -p build/san
	$(CC) $(WARN) $(CPPFLAGS) -O1 -g $(SAN) -c -o $@ $<

build/san/schema.o: build/schema.c
	@mkdir -p build/san
	$(CC) $(WARN) $(CPPFLAGS) -O1 -g $(SAN) -c -o $@ $<

build/san/schema_pg.o: build/schema_pg.c
	@mkdir -p build/san
	$(CC) $(WARN) $(CPPFLAGS) -O1 -g $(SAN) -c -o $@ $<

# The responder built with AddressSanitizer/UBSan, for tests/80-sanitizers.t.
build/san/signal-fcgi: $(SAN_SRV)
	$(CC) -O1 -g $(SAN) -o $@ $(SAN_SRV) $(LDLIBS)

build/unit: tests/unit.c $(SAN_OBJS) build/san/httpparse.o $(HEADERS)
	$(CC) $(WARN) $(CPPFLAGS) -O1 -g $(SAN) -o $@ tests/unit.c $(SAN_OBJS) build/san/httpparse.o $(LDLIBS)

# The same tests without sanitizers, for valgrind.
build/unit-plain: tests/unit.c $(addprefix build/,$(CORE_OBJS) httpparse.o) $(HEADERS)
	$(CC) $(WARN) $(CPPFLAGS) -O1 -g -o $@ tests/unit.c $(addprefix build/,$(CORE_OBJS) httpparse.o) $(LDLIBS)

build:
	@mkdir -p build

# Fuzz targets (tests/fuzz/): libFuzzer builds for `make fuzz` (clang), and
# replay builds (gcc + ASan, no libFuzzer) that `make test` runs over the
# seed corpus and every crash input kept in tests/fuzz/regress/.
FUZZ_TARGETS  = json http upgrade core
FUZZ_BASE     = fcgi/base/xalloc.c fcgi/base/buf.c fcgi/base/util.c fcgi/base/log.c fcgi/base/metrics.c fcgi/base/error.c
FUZZ_SRC_json = fcgi/core/jsonv.c $(FUZZ_BASE)
FUZZ_SRC_http = fcgi/transport/httpparse.c $(FUZZ_BASE)
FUZZ_SRC_upgrade = fcgi/transport/httpparse.c $(FUZZ_BASE)
FUZZ_SRC_core = $(FUZZ_BASE) fcgi/base/config.c fcgi/core/jsonv.c fcgi/store/store.c \
                fcgi/store/store_sqlite.c fcgi/store/store_pg.c fcgi/core/ratelimit.c fcgi/core/core.c build/schema.c \
                build/schema_pg.c
FUZZ_SECONDS ?= 60

build/fuzz/%: tests/fuzz/fuzz_%.c $(SOURCES) $(HEADERS) build/schema.c build/schema_pg.c
	@mkdir -p build/fuzz
	clang $(WARN) -Wno-unknown-warning-option -g -O1 -fsanitize=fuzzer,address,undefined -Ifcgi -Ibuild $(PG_CFLAGS) -o $@ $< $(FUZZ_SRC_$*) $(LDLIBS)

build/replay/%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c $(SOURCES) $(HEADERS) build/schema.c build/schema_pg.c
	@mkdir -p build/replay
	$(CC) $(WARN) -g -O1 $(SAN) -Ifcgi -Ibuild $(PG_CFLAGS) -o $@ $< tests/fuzz/replay.c $(FUZZ_SRC_$*) $(LDLIBS)

deps-fuzz: deps
	@missing=""; for p in $(DEB_FUZZ); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

# Each target runs FUZZ_SECONDS; a crash input lands in tests/fuzz/regress/TARGET/
# (commit it: `make test` replays it from then on).
fuzz: deps-fuzz
	@$(MAKE) --no-print-directory $(addprefix build/fuzz/,$(FUZZ_TARGETS))
	@status=0; for t in $(FUZZ_TARGETS); do \
	  mkdir -p build/fuzz/work-$$t tests/fuzz/regress/$$t; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  ./build/fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -max_len=70000 -print_final_stats=1 \
	    -artifact_prefix=tests/fuzz/regress/$$t/ build/fuzz/work-$$t tests/fuzz/corpus/$$t \
	    > build/fuzz/$$t.log 2>&1 || status=1; \
	  grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+ *DONE|ERROR|SUMMARY' build/fuzz/$$t.log | sed "s/^/  $$t: /"; \
	done; exit $$status

# Install missing Debian packages (we run as root on the target machines).
deps:
	@missing=""; for p in $(DEB_BUILD) $(DEB_RUN); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

deps-test: deps
	@missing=""; for p in $(DEB_TEST) $(DEB_PKG); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

run: deps
	@$(MAKE) --no-print-directory all
	@mkdir -p $(dir $(DB)) $(RUNDIR)
ifneq ($(PG_URL)$(filter postgres,$(STORE)),)
	@PG_DIR="$(PG_DIR)" exec tools/run-postgres.sh "$(PG_URL)" "$(PGPORT)" $(MAKE) --no-print-directory run-front
else
	@$(MAKE) --no-print-directory run-front
endif

# The front server in the foreground; STORE_ARGS (from run-postgres.sh)
# points the responders at PostgreSQL. Not echoed: a PG_URL may hold a
# password.
run-front:
	@echo "signaling service on http://$(BIND):$(PORT)/ behind $(SERVER) ($(if $(STORE_ARGS),PostgreSQL,database $(DB)); Ctrl-C stops it)"
ifeq ($(SERVER),nginx)
	@RUNDIR=$(RUNDIR) exec tools/run-nginx.sh $(PORT) $(BIND) $(DB) $(STORE_ARGS) $(ARGS)
else ifeq ($(SERVER),apache)
	@RUNDIR=$(RUNDIR) exec tools/run-apache.sh $(PORT) $(BIND) $(DB) $(STORE_ARGS) $(ARGS)
else
	@SIGNAL_ROOT=$(CURDIR) SIGNAL_BIN=$(CURDIR)/build/signal-fcgi SIGNAL_RUNDIR=$(RUNDIR) SIGNAL_DB=$(DB) SIGNAL_ARGS="$(STORE_ARGS) $(ARGS)" \
	  SIGNAL_PROCS=$(PROCS) SIGNAL_WORKERS=$(WORKERS) SIGNAL_BIND=$(BIND) PORT=$(PORT) exec lighttpd -D -f lighttpd.conf
endif

# NODES nodes (PORT+1 ... PORT+NODES) on one PostgreSQL (the local one, or
# PG_URL's), an nginx balancer on PORT in front: README, "Scaling out".
# (postgresql-15 and nginx-light among the packages deps installs).
cluster: STORE = postgres
cluster: SERVER = nginx
cluster: deps
	@$(MAKE) --no-print-directory all
	@PG_DIR="$(PG_DIR)" RUNROOT="$(RUNROOT)" exec tools/run-postgres.sh "$(PG_URL)" "$(PGPORT)" \
	  tools/run-cluster.sh $(NODES) $(PORT) $(BIND) $(PROCS) $(ARGS)

# Three test files at a time: most of a file's time is spent waiting
# (servers starting, timeouts, heartbeats; one run used 240 s of CPU in
# 1,080 s), and every test must pass on a busy machine anyway. The slowest
# go first so that the three lanes end together. 91-apache and
# 93-shared-hosting both build build/shared-hosting and make a user for
# mod_fcgid: they run one after the other.
TEST_SLOW = tests/91-apache.t tests/92-postgres.t tests/90-nginx.t tests/50-browser.t tests/80-sanitizers.t
TEST_JOBS ?= 3
test: deps-test
	@$(MAKE) --no-print-directory all build/unit build/unit-plain build/san/signal-fcgi $(addprefix build/replay/,$(FUZZ_TARGETS))
	prove -v --timer -j$(TEST_JOBS) --rules='seq={tests/91-apache.t,tests/93-shared-hosting.t}' --rules='par=**' \
	  $(TEST_SLOW) $(filter-out $(TEST_SLOW),$(wildcard tests/*.t))

bench: deps
	@$(MAKE) --no-print-directory all
	@if [ -f bench/Makefile ]; then $(MAKE) -C bench run; else echo "no benchmarks yet"; fi

install: all
	install -D -m 0755 build/signal-fcgi $(DESTDIR)/usr/local/bin/signal-fcgi

# ---- the shared-hosting bundle ----
# A folder to upload into a site on an Apache + mod_fcgid host (no root, no
# daemon): the responder as signal.fcgi, the call page, the .htaccess files,
# a data folder. Debian ships static archives of libfcgi, json-c, SQLite,
# libcrypto and http-parser, so those are linked in; libwslay-dev has no
# libwslay.a, and a fully static glibc cannot load a shared library, so the
# program links glibc and wslay dynamically and carries libwslay.so.1 in
# lib/ (found through RUNPATH $$ORIGIN/lib). It runs on any x86-64 Linux
# with glibc 2.34 or later, with nothing else installed.
BUNDLE     = build/shared-hosting/signal
STATIC_LIBS = -Wl,-Bstatic -lfcgi -ljson-c -lsqlite3 -lcrypto -lhttp_parser -Wl,-Bdynamic -lwslay -lpthread -ldl -lm

# Without the PostgreSQL store (libpq's own dependencies have no static
# archives, and a shared host has no libpq): store.c built with STORE_NO_PG.
BUNDLE_OBJS = $(filter-out build/store.o build/store_pg.o build/schema_pg.o,$(OBJS)) build/bundle/store.o

build/bundle/store.o: fcgi/store/store.c $(HEADERS) | build
	@mkdir -p build/bundle
	$(CC) $(WARN) $(CPPFLAGS) $(CFLAGS) -DSTORE_NO_PG -c -o $@ $<

build/signal.fcgi: $(BUNDLE_OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(BUNDLE_OBJS) -Wl,-rpath,'$$ORIGIN/lib' -Wl,--enable-new-dtags $(STATIC_LIBS)

shared-hosting: deps build/signal.fcgi
	@rm -rf $(BUNDLE) && mkdir -p $(BUNDLE)/lib $(BUNDLE)/data
	install -m 0755 build/signal.fcgi $(BUNDLE)/signal.fcgi
	install -m 0644 $$(readlink -f /usr/lib/x86_64-linux-gnu/libwslay.so.1) $(BUNDLE)/lib/libwslay.so.1
	install -m 0644 www/*.html www/*.js www/*.css $(BUNDLE)/
	install -m 0644 deploy/shared-hosting/htaccess $(BUNDLE)/.htaccess
	install -m 0644 deploy/shared-hosting/signal.conf $(BUNDLE)/signal.conf
	install -m 0644 deploy/shared-hosting/data-htaccess $(BUNDLE)/data/.htaccess
	install -m 0644 deploy/shared-hosting/data-htaccess $(BUNDLE)/lib/.htaccess
	install -m 0644 deploy/shared-hosting/README.txt $(BUNDLE)/README.txt
	@echo "built $(BUNDLE)/ (upload the folder into your site; see docs/deployment.md, Shared hosting)"

# ---- the Debian package ----
VERSION = $(shell sed -n 's/^\#define SIG_VERSION "\(.*\)"/\1/p' fcgi/base/config.c)

# The man page, from --help (help2man): what the binary says is what it documents.
build/signal-fcgi.8: build/signal-fcgi
	help2man --section 8 --no-info --name "WebRTC signaling server over FastCGI (SSE, long-poll, WebSocket)" \
	  --include deploy/signal-fcgi.8.inc --output $@ ./build/signal-fcgi

# What debian/rules installs into the package (DESTDIR): the FHS paths.
install-deb: build/signal-fcgi build/signal-fcgi.8
	install -D -m 0755 build/signal-fcgi $(DESTDIR)/usr/sbin/signal-fcgi
	install -D -m 0644 build/signal-fcgi.8 $(DESTDIR)/usr/share/man/man8/signal-fcgi.8
	install -d $(DESTDIR)/usr/share/signal-fcgi/www $(DESTDIR)/usr/share/signal-fcgi/schema \
	  $(DESTDIR)/usr/share/signal-fcgi/errors
	install -m 0644 www/*.html www/*.js www/*.css $(DESTDIR)/usr/share/signal-fcgi/www/
	install -m 0644 errors/*.html $(DESTDIR)/usr/share/signal-fcgi/errors/
	install -m 0644 $(SCHEMA) $(DESTDIR)/usr/share/signal-fcgi/schema/
	install -D -m 0644 deploy/signal-fcgi.conf $(DESTDIR)/etc/signal-fcgi/signal-fcgi.conf
	install -D -m 0644 deploy/apache-site.conf $(DESTDIR)/etc/signal-fcgi/apache.conf
	install -D -m 0644 deploy/nginx-site.conf $(DESTDIR)/etc/signal-fcgi/nginx.conf
	install -D -m 0644 deploy/lighttpd-site.conf $(DESTDIR)/etc/signal-fcgi/lighttpd.conf

deps-pkg: deps
	@missing=""; for p in $(DEB_PKG); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

# dpkg-buildpackage writes into the parent of the tree it builds: build it
# from a copy under build/deb/, so the .deb lands there, never beside the checkout.
deb: deps-pkg
	@rm -rf build/deb && mkdir -p build/deb/signal-fcgi-$(VERSION)
	@tar -c --exclude=./build --exclude=./var --exclude=./tests/out --exclude=./.git --exclude=node_modules . \
	  | tar -x -C build/deb/signal-fcgi-$(VERSION)
	cd build/deb/signal-fcgi-$(VERSION) && dpkg-buildpackage -us -uc -b >../build.log 2>&1 || { tail -30 ../build.log; exit 1; }
	lintian --fail-on error build/deb/signal-fcgi_$(VERSION)_amd64.deb >build/deb/lintian.log 2>&1; \
	  status=$$?; grep -v '^running with root' build/deb/lintian.log; exit $$status
	@echo "built build/deb/signal-fcgi_$(VERSION)_amd64.deb"

clean:
	rm -rf build
