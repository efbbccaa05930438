# edgeforge - one native C program for the distill -> tune -> quantize -> eval pipeline.
#
#   make               build/edgeforge (CPU, OpenMP, OpenBLAS)
#   make test          build and run every unit test (tests/test_*.c), one summary line
#   make asan          the same tests under AddressSanitizer + UBSan (build-asan/)
#   make fuzz          libFuzzer targets (fuzz/fuzz_*.c) with clang (build-fuzz/)
#   make debug         -O0 -g build in build-debug/
#   make format        clang-format -i on every source; format-check only checks
#   make lint          clang-tidy + cppcheck
#   make clean         remove build directories
#
# Options: DEV=1 (-Werror, CI sets it), NATIVE=1 (-march=native), NO_OMP=1,
# BUILD=dir (object directory, default build), CUDA=1 (reserved for the CUDA backend).

BUILD   ?= build
CC      ?= cc
OPT     ?= -O2
PKGS    := jansson libpcre2-8 hiredis libcurl
CFLAGS_PKG := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LIBS_PKG   := $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -ljansson -lpcre2-8 -lhiredis -lcurl)

WARN := -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wold-style-definition -Wvla -Wwrite-strings -Wpointer-arith -Wformat=2 \
        -Wimplicit-fallthrough -Wundef -Wno-unused-parameter -Wno-format-truncation
CFLAGS  := -std=c11 -D_GNU_SOURCE $(OPT) -g $(WARN) -Isrc -I/usr/include/openblas $(CFLAGS_PKG) $(EXTRA_CFLAGS)
# OpenBLAS: the OpenMP build (Debian libopenblas0-openmp) when installed, linked by path with
# an rpath so the system-wide alternative stays untouched. It runs its GEMMs on our OpenMP
# threads; the default pthread build keeps a second pool of threads that spin in
# sched_yield between calls and fight ours for the cores (docs/design.md, "BLAS threads").
BLAS_OMP := $(wildcard /usr/lib/$(shell $(CC) -print-multiarch 2>/dev/null)/openblas-openmp/libopenblas.so.0)
ifneq ($(BLAS_OMP),)
BLAS_LIBS := $(BLAS_OMP) -Wl,-rpath,$(patsubst %/,%,$(dir $(BLAS_OMP)))
else
BLAS_LIBS := -lopenblas
endif
LDLIBS  := $(LIBS_PKG) $(BLAS_LIBS) -lm -lpthread
ifeq ($(DEV),1)
CFLAGS  += -Werror
endif
ifeq ($(NATIVE),1)
CFLAGS  += -march=native
endif
ifneq ($(NO_OMP),1)
CFLAGS  += -fopenmp
LDFLAGS += -fopenmp
else
CFLAGS  += -Wno-unknown-pragmas
endif
ifdef SANITIZE
CFLAGS  += -fsanitize=$(SANITIZE) -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS += -fsanitize=$(SANITIZE)
endif

# Library sources: every src/<module>/*.c except the CLI; the CLI links them.
LIB_SRC  := $(filter-out src/cli/%,$(wildcard src/*/*.c))
CLI_SRC  := $(wildcard src/cli/*.c)
TEST_SRC := $(wildcard tests/test_*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_COMMON := $(BUILD)/tests/testutil.o

.PHONY: all test tests asan debug fuzz format format-check lint clean
# keep test objects (make would delete them as intermediates and rebuild every time)
.SECONDARY:
all: $(BUILD)/edgeforge

$(BUILD)/libedgeforge.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	$(AR) rcs $@ $^

$(BUILD)/edgeforge: $(CLI_OBJ) $(BUILD)/libedgeforge.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/tests/testutil.o: tests/testutil.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/tests/test_%: $(BUILD)/tests/test_%.o $(TEST_COMMON) $(BUILD)/libedgeforge.a
	$(CC) $(LDFLAGS) -o $@ $^ -lcmocka $(LDLIBS)

tests: $(TEST_BIN) $(BUILD)/edgeforge

# Runs every test binary (and the CLI tests) from the repository root; prints
# "N passed, N failed" summed over all of them and fails if any test failed.
test: tests
	@BUILD=$(BUILD) sh tests/run_tests.sh $(TEST_BIN)

asan:
	$(MAKE) BUILD=build-asan SANITIZE=address,undefined OPT=-O1 test

debug:
	$(MAKE) BUILD=build-debug OPT=-O0 all

FUZZ_SRC := $(wildcard fuzz/fuzz_*.c)
fuzz:
	$(MAKE) BUILD=build-fuzz CC=clang NO_OMP=1 OPT=-O1 \
	  EXTRA_CFLAGS="-fsanitize=fuzzer-no-link,address,undefined -Wno-unknown-warning-option" \
	  LDFLAGS="-fsanitize=address,undefined" build-fuzz/libedgeforge.a
	@for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
	  echo "  FUZZ $$n"; \
	  clang -std=c11 -D_GNU_SOURCE -O1 -g -Isrc $(CFLAGS_PKG) -I/usr/include/openblas \
	    -fsanitize=fuzzer,address,undefined -o build-fuzz/$$n $$f build-fuzz/libedgeforge.a \
	    $(LDLIBS) || exit 1; done

FMT_SRC = $(wildcard src/*/*.[ch] tests/*.[ch] fuzz/*.c bench/*.c)
format:
	clang-format -i $(FMT_SRC)
format-check:
	clang-format --dry-run --Werror $(FMT_SRC)
lint:
	clang-tidy $(wildcard src/*/*.c) -- $(CFLAGS)
	cppcheck --quiet --enable=warning,performance,portability --error-exitcode=1 -Isrc src

clean:
	rm -rf build build-asan build-debug build-fuzz

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_BIN:=.d) $(BUILD)/tests/testutil.d
