# Makefile: the one entry point. make | make test | make demo | make bench | make CUDA=1 [CUDNN=1] | MPI=1
#
# Objects go to $(BUILD) (build/ for the CPU build, build-cuda/ for CUDA=1), so both builds coexist.

CUDA ?= 0
# Parallel by default (one job per core); `make -jN` still overrides.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
ifeq ($(MAKELEVEL)$(filter -j%,$(MAKEFLAGS)),0)
MAKEFLAGS += -j$(JOBS)
endif
# SANITIZE=1: AddressSanitizer + UndefinedBehaviorSanitizer, stopping at the first finding, in its own
# folder (build-san) so it never mixes with the optimised objects.
SANITIZE ?= 0
ifeq ($(SANITIZE),1)
BUILD ?= build-san
OPT ?= -O1 -g
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
# The examples load libhamu.so into Python, whose interpreter must get the ASan runtime first (and
# whose own allocations are not ours to leak-check).
SAN_RUN = LD_PRELOAD=$(shell $(CXX) -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0
endif
ifeq ($(MPI),1)
BUILD ?= $(if $(filter 1,$(CUDA)),build-cuda-mpi,build-mpi)
endif
ifeq ($(CUDA),1)
BUILD ?= build-cuda
else
BUILD ?= build
endif

CXX ?= g++
ARCH_FLAGS ?= -march=native
OPT ?= -O3
EXTRA_INC ?=
EXTRA_LIBDIR ?=
CPPFLAGS := -I. $(EXTRA_INC)
CXXFLAGS := -std=c++20 $(OPT) $(ARCH_FLAGS) -fopenmp -Wall -Wextra -Wno-unused-parameter -MMD -MP $(SAN_FLAGS) $(EXTRA_CXXFLAGS)
LDFLAGS := -fopenmp $(EXTRA_LIBDIR) $(SAN_FLAGS) $(EXTRA_LDFLAGS)
# ZLIB_LIB lets a machine without the unversioned libz.so link -l:libz.so.1 (scripts/gpu-check.sh).
ZLIB_LIB ?= -lz
LDLIBS := $(ZLIB_LIB)

LIB_SRC ?= $(wildcard kernels/cpu/*.cpp engine/*.cpp models/*.cpp loaders/*.cpp train/*.cpp unlearn/*.cpp engine/*/*.cpp models/*/*.cpp loaders/*/*.cpp unlearn/*/*.cpp)
CLI_SRC := $(wildcard cli/*.cpp)
TEST_SRC ?= $(wildcard tests/*.cpp)
BENCH_SRC := $(wildcard bench/*.cpp)

# ---- CUDA switch ---------------------------------------------------------------------------------
ifeq ($(CUDA),1)
NVCC ?= nvcc
CUDA_HOME ?= $(patsubst %/bin/,%,$(dir $(shell command -v $(NVCC))))
CUDA_ARCH ?= sm_90
CUDNN_HOME ?= $(CUDA_HOME)
# cuDNN is used when its header and library are found (CUDNN=0 turns it off). CUDNN_LIB lets a pip-installed
# cuDNN without the unversioned libcudnn.so link -l:libcudnn.so.9.
CUDNN ?= $(shell test -f $(CUDNN_HOME)/include/cudnn.h && ls $(CUDNN_HOME)/lib64/libcudnn.so* $(CUDNN_HOME)/lib/libcudnn.so* 2>/dev/null | grep -q . && echo 1 || echo 0)
CUDNN_LIB ?= -lcudnn
CU_SRC := $(wildcard kernels/cuda/*.cu)
CPPFLAGS += -DHAMU_CUDA -I$(CUDA_HOME)/include
# --extended-lambda: the elementwise kernels take __device__ lambdas. Host flags go through -Xcompiler.
NVCCFLAGS := -std=c++20 -O3 -arch=$(CUDA_ARCH) --extended-lambda -Xcompiler -fopenmp $(foreach f,$(ARCH_FLAGS),-Xcompiler $(f)) -MMD -MP
LDLIBS += -L$(CUDA_HOME)/lib64 -L$(CUDA_HOME)/lib -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart
ifeq ($(CUDNN),1)
CPPFLAGS += -DHAMU_CUDNN -I$(CUDNN_HOME)/include
LDLIBS += -L$(CUDNN_HOME)/lib64 -L$(CUDNN_HOME)/lib -Wl,-rpath,$(CUDNN_HOME)/lib64 -Wl,-rpath,$(CUDNN_HOME)/lib $(CUDNN_LIB)
endif
endif

# ---- MPI switch (many processes; with CUDA=1 also NCCL) -------------------------------------------
# make MPI=1: Open MPI's compile and link flags from `mpicxx --showme` (so CXX stays g++ or ccache g++;
# MPI_CFLAGS/MPI_LIBS override them for another MPI). Without MPI=1 the MPI and NCCL sources stay out
# and the build needs neither installed.
MPI ?= 0
MPI_SRC := engine/collectives_mpi.cpp
NCCL_SRC := engine/collectives_nccl.cpp
ifeq ($(MPI),1)
MPICXX ?= mpicxx
MPI_CFLAGS ?= $(shell $(MPICXX) --showme:compile)
MPI_LIBS ?= $(shell $(MPICXX) --showme:link)
CPPFLAGS += -DHAMU_MPI $(MPI_CFLAGS)
LDLIBS += $(MPI_LIBS)
# NCCL (CUDA buffers) when its header is found: the CUDA toolkit's, or NCCL_HOME (e.g. the pip wheel's
# site-packages/nvidia/nccl, NCCL_LIB=-l:libnccl.so.2); without it CUDA buffers cannot be reduced.
NCCL_HOME ?= $(CUDA_HOME)
NCCL_LIB ?= -lnccl
NCCL ?= $(if $(filter 1,$(CUDA)),$(shell test -f $(NCCL_HOME)/include/nccl.h && echo 1 || echo 0),0)
ifeq ($(NCCL),1)
CPPFLAGS += -DHAMU_NCCL -I$(NCCL_HOME)/include
LDLIBS += -L$(NCCL_HOME)/lib64 -L$(NCCL_HOME)/lib -Wl,-rpath,$(NCCL_HOME)/lib $(NCCL_LIB)
else
LIB_SRC := $(filter-out $(NCCL_SRC),$(LIB_SRC))
endif
else
LIB_SRC := $(filter-out $(MPI_SRC) $(NCCL_SRC),$(LIB_SRC))
endif

LIB_OBJ := $(LIB_SRC:%.cpp=$(BUILD)/%.o) $(CU_SRC:%.cu=$(BUILD)/%.cu.o)
# The C API (capi/) is in the archive too, so libhamu.a is both the engine every binary links and the
# public static library of `make lib`.
CAPI_SRC := $(wildcard capi/*.cpp)
LIB_OBJ += $(CAPI_SRC:%.cpp=$(BUILD)/%.o)
LIB := $(BUILD)/libhamu.a
# Every binary links the whole library: registered objects (unlearn/methods/*.cpp and other registries)
# add themselves from static initialisers that nothing references by symbol, so a plain archive link
# would drop them (unlearn/method_registry.h). One new file stays the whole cost of a new method.
LINK_LIB := -Wl,--whole-archive $(LIB) -Wl,--no-whole-archive
HAMU := $(BUILD)/hamu
TESTS := $(BUILD)/hamu_tests
BENCHES := $(BENCH_SRC:bench/%.cpp=$(BUILD)/bench/%)

.PHONY: fuzz fuzz-build fuzz-corpus all lib examples test test-run demo demo-text sweep bench bench-build deps clean
all: $(LIB) $(HAMU) $(TESTS) lib

# Short build lines (`make V=1` prints the whole commands).
ifeq ($(V),1)
Q :=
say = @true
else
Q := @
say = @printf '  %-5s %s\n' $(1) $(2)
endif

$(BUILD)/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(call say,CXX,$<)
	$(Q)$(CXX) $(CPPFLAGS) $(CXXFLAGS) -c $< -o $@

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(call say,NVCC,$<)
	$(Q)$(NVCC) $(CPPFLAGS) $(NVCCFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(call say,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(HAMU): $(CLI_SRC:%.cpp=$(BUILD)/%.o) $(LIB)
	$(call say,LINK,$@)
	$(Q)$(CXX) $(LDFLAGS) $(filter-out $(LIB),$^) $(LINK_LIB) $(LDLIBS) -o $@

# The commit baked into every report and checkpoint (cli/provenance.cpp): a generated header, rewritten
# only when the commit changes, so a new commit recompiles one file. "-dirty" marks local changes.
HAMU_COMMIT := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)$(shell git rev-parse --git-dir >/dev/null 2>&1 && ! git diff --quiet HEAD 2>/dev/null && echo -dirty)
$(BUILD)/generated/hamu_commit.h: FORCE
	@mkdir -p $(dir $@)
	@echo '#define HAMU_GIT_COMMIT "$(HAMU_COMMIT)"' | cmp -s - $@ || echo '#define HAMU_GIT_COMMIT "$(HAMU_COMMIT)"' > $@
$(BUILD)/cli/provenance.o: $(BUILD)/generated/hamu_commit.h
$(BUILD)/cli/provenance.o: CPPFLAGS += -I$(BUILD)/generated
.PHONY: FORCE
FORCE:

# The figure tests also link the SVG writer and the figures from cli/.
TEST_CLI_SRC := cli/svg.cpp cli/plots.cpp
$(TESTS): $(TEST_SRC:%.cpp=$(BUILD)/%.o) $(TEST_CLI_SRC:%.cpp=$(BUILD)/%.o) $(LIB)
	$(call say,LINK,$@)
	$(Q)$(CXX) $(LDFLAGS) $(filter-out $(LIB),$^) $(LINK_LIB) $(LDLIBS) -o $@

# bench_gemm compares against OpenBLAS; nothing else links it.
$(BUILD)/bench/bench_gemm: LDLIBS += -lopenblas
$(BUILD)/bench/%: $(BUILD)/bench/%.o $(LIB)
	$(call say,LINK,$@)
	$(Q)$(CXX) $(LDFLAGS) $(filter-out $(LIB),$^) $(LINK_LIB) $(LDLIBS) -o $@

# ---- libhamu: the C API (capi/hamu.h) as a shared library, the static one, and the header ---------------
# The shared library needs position-independent objects: a second object set under $(BUILD)/pic/, compiled
# with -fvisibility=hidden so only the functions hamu.h marks HAMU_API are exported (the engine objects
# keep their flags, so existing build folders stay valid). Objects, not an archive, go into the link, so
# every registered method is in it.
SO := $(BUILD)/libhamu.so
PIC_OBJ := $(LIB_OBJ:$(BUILD)/%=$(BUILD)/pic/%)
PIC_FLAGS := -fPIC -fvisibility=hidden -fvisibility-inlines-hidden
$(BUILD)/pic/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(call say,PIC,$<)
	$(Q)$(CXX) $(CPPFLAGS) $(CXXFLAGS) $(PIC_FLAGS) -c $< -o $@
$(BUILD)/pic/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(call say,PICNV,$<)
	$(Q)$(NVCC) $(CPPFLAGS) $(NVCCFLAGS) $(foreach f,$(PIC_FLAGS),-Xcompiler $(f)) -c $< -o $@
$(SO): $(PIC_OBJ) capi/libhamu.map
	$(call say,LINK,$@)
	$(Q)$(CXX) -shared -Wl,-soname,libhamu.so -Wl,-z,defs -Wl,--version-script=capi/libhamu.map $(LDFLAGS) \
	  $(filter %.o,$^) $(LDLIBS) -o $@
$(BUILD)/include/hamu.h: capi/hamu.h
	@mkdir -p $(dir $@)
	$(Q)cp $< $@
lib: $(SO) $(LIB) $(BUILD)/include/hamu.h

# Embedding examples (examples/run.sh runs them): C against the installed header and libhamu.so, strict C99;
# engine_step is the engine's own step on saved gradients, the reference the Python examples compare with.
CC ?= cc
EXAMPLES := $(BUILD)/examples/unlearn_mlp $(BUILD)/examples/engine_step
$(BUILD)/examples/unlearn_mlp: examples/unlearn_mlp.c $(SO) $(BUILD)/include/hamu.h
	@mkdir -p $(dir $@)
	$(call say,CC,$<)
	$(Q)$(CC) -std=c99 -Wall -Wextra -Werror -pedantic -O2 -I$(BUILD)/include $< -L$(BUILD) -lhamu -Wl,-rpath,'$$ORIGIN/..' -lm -o $@
$(BUILD)/examples/engine_step: $(BUILD)/examples/engine_step.o $(LIB)
	$(call say,LINK,$@)
	$(Q)$(CXX) $(LDFLAGS) $(filter-out $(LIB),$^) $(LINK_LIB) $(LDLIBS) -o $@
examples: $(EXAMPLES)

# Each README command does its own set-up: the missing Debian packages first, then the build.
test:
	@scripts/install-deps.sh
	@$(MAKE) --no-print-directory test-run
test-run: $(TESTS) $(HAMU) $(EXAMPLES) $(BUILD)/fuzz_replay
	./$(TESTS) && ./$(FUZZ_REPLAY) tests/fuzz/regressions tests/fuzz/corpus && tests/cli_test.sh $(HAMU) && tests/resume_test.sh $(HAMU) && tests/svg_test.sh --tests $(TESTS)$(if $(filter 1,$(MPI)), && tests/mpi_test.sh $(BUILD)) && $(SAN_RUN) examples/run.sh $(BUILD)

# ---- fuzzing: tests/fuzz/fuzz_<name>.cpp is a target (tests/fuzz/fuzz.h); a new file is a new target --
# make test replays every target's regression and seed files through $(FUZZ_REPLAY) (built with $(CXX)).
# make fuzz [FUZZ_SECONDS=60] [FUZZ_TARGETS="json idx"] builds each target with clang, libFuzzer, ASan
# and UBSan in build-fuzz/ and runs it for FUZZ_SECONDS (-rss_limit_mb=2048); tests/fuzz/run.sh
# prints execs and crashes per target. make fuzz-corpus rewrites the seeds from our own writers.
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.cpp)
FUZZ_TARGETS ?= $(FUZZ_SRC:tests/fuzz/fuzz_%.cpp=%)
FUZZ_SECONDS ?= 60
FUZZ_BUILD ?= build-fuzz
FUZZ_CXX ?= clang++
FUZZ_REPLAY := $(BUILD)/fuzz_replay
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g

$(FUZZ_REPLAY): $(BUILD)/tests/fuzz/replay.o $(BUILD)/tests/fuzz/support.o $(FUZZ_SRC:%.cpp=$(BUILD)/%.o) $(LIB)
	$(call say,LINK,$@)
	$(Q)$(CXX) $(LDFLAGS) $(filter-out $(LIB),$^) $(LINK_LIB) $(LDLIBS) -o $@

# Inside build-fuzz only (make fuzz sets FUZZING=1): the targets' libFuzzer entry points.
ifeq ($(FUZZING),1)
CPPFLAGS += -DHAMU_LIBFUZZER
endif
$(BUILD)/fuzz/%: $(BUILD)/tests/fuzz/fuzz_%.o $(BUILD)/tests/fuzz/support.o $(LIB)
	$(call say,LINK,$@)
	@mkdir -p $(dir $@)
	$(Q)$(CXX) $(LDFLAGS) -fsanitize=fuzzer $(filter-out $(LIB),$^) $(LINK_LIB) $(LDLIBS) -o $@
fuzz-build: $(FUZZ_TARGETS:%=$(BUILD)/fuzz/%)

fuzz:
	@scripts/install-fuzz-deps.sh
	@$(MAKE) --no-print-directory FUZZING=1 BUILD=$(FUZZ_BUILD) CXX="$(FUZZ_CXX)" OPT=-O1 \
	  EXTRA_CXXFLAGS="-fsanitize=fuzzer-no-link $(FUZZ_SAN) -Wno-pass-failed" EXTRA_LDFLAGS="$(FUZZ_SAN)" fuzz-build
	tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

$(BUILD)/fuzz_corpus: $(BUILD)/tests/fuzz/make_corpus.o $(LIB)
	$(call say,LINK,$@)
	$(Q)$(CXX) $(LDFLAGS) $(filter-out $(LIB),$^) $(LINK_LIB) $(LDLIBS) -o $@
fuzz-corpus: $(BUILD)/fuzz_corpus
	./$(BUILD)/fuzz_corpus tests/fuzz

bench-build: $(BENCHES)

bench: $(BENCHES)
	bench/run $(BUILD)

demo:
	scripts/demo.sh

demo-text:
	scripts/demo-text.sh

# The rho sweep of README "Stopping" (about 75 min on 2 cores; settings in the script's header).
sweep: $(HAMU)
	HAMU=$(HAMU) scripts/sweep-rho.sh runs/sweep

deps:
	scripts/install-deps.sh

clean:
	rm -rf build build-cuda build-mpi build-cuda-mpi build-san build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
