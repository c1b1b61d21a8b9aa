# dts_decoding: the output plugin and its extension, built with PGXS against the server that
# pg_config names. The applier and the C++ tests are built by CMake (CMakeLists.txt).

MODULE_big = dts_decoding
OBJS = \
	plugin/binary_output.o \
	plugin/ddl_capture.o \
	plugin/decoding.o \
	plugin/json_format.o \
	plugin/json_output.o \
	plugin/options.o \
	plugin/plugin_entry.o \
	plugin/relation_cache.o \
	plugin/sql_functions.o \
	plugin/table_pattern.o
PGFILEDESC = "dts_decoding - logical decoding output plugin for dts"

DATA = plugin/dts_decoding.control plugin/dts_decoding--0.1.0.sql plugin/dts_decoding--0.1.0--0.2.0.sql \
       plugin/dts_decoding--0.2.0--0.3.0.sql plugin/dts_decoding--0.3.0--0.4.0.sql
MODULEDIR = extension

REGRESS = types nulls_toast identity partitions truncate_messages options streaming binary_render ddl_capture
# `make installcheck` runs these against a temp instance; REGRESS_DIR moves its output and
# the instance elsewhere, e.g. to a directory the unprivileged user running them can write.
REGRESS_DIR ?= .
REGRESS_OPTS = --temp-config=$(srcdir)/sql/regress.conf --temp-instance=$(REGRESS_DIR)/tmp_check \
	--outputdir=$(REGRESS_DIR) --load-extension=dts_decoding

# The plugin is C++17 without exceptions or RTTI: nothing it does can throw, so no C++
# exception can unwind into PostgreSQL's C frames. -Wno-register: s_lock.h uses `register`.
PG_CXXFLAGS = -std=c++17 -fno-exceptions -fno-rtti -Wno-register -Wno-missing-field-initializers \
	-I$(srcdir)/include -I$(srcdir)/plugin
# PGXS links with gcc, which does not add the C++ runtime.
SHLIB_LINK = -lstdc++

# Debian's server is built with LLVM, so PGXS would also compile each .cpp to bitcode with
# clang, without our C++ flags. An output plugin gains nothing from JIT inlining: skip it.
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies here (Debian builds without --enable-depend): rebuild
# every object when any header changes, or objects would disagree about shared enums.
$(OBJS): $(wildcard $(srcdir)/plugin/*.hpp $(srcdir)/include/dts/*.h)

# `make install` also builds dts_applier with CMake and installs it onto the PATH.
APPLIER_PREFIX ?= /usr/local
.PHONY: install-applier
install: install-applier
install-applier:
	cmake -S $(srcdir) -B $(srcdir)/build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(srcdir)/build -j2 --target dts_applier
	cmake --install $(srcdir)/build --prefix $(APPLIER_PREFIX)

# The long form of the fault suite: 50 kills in the crash soak, 150 random table-pattern lists
# compared between plugin and applier, a 5M-row unstreamed transaction, then the decoder fuzzed for at least 10 million executions. Its figures go into tests/fault/README.md by hand.
.PHONY: soak
soak:
	cmake -S $(srcdir) -B $(srcdir)/build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(srcdir)/build -j2 --target dts_applier
	DTS_SOAK_KILLS=$${DTS_SOAK_KILLS:-50} /usr/bin/python3 $(srcdir)/tests/fault/fault_test.py
	DTS_SELECTION_RANDOM_LISTS=150 /usr/bin/python3 $(srcdir)/tests/integration/selection_test.py the_plugin_and_the_applier_agree_on_random_patterns
	DTS_HUGE_TXN_ROWS=5000000 /usr/bin/python3 $(srcdir)/tests/integration/core_test.py unstreamed_huge_transaction_has_flat_memory
	DTS_BIG_TXN_ROWS=2000000 /usr/bin/python3 $(srcdir)/tests/integration/follow_test.py a_large_streamed_transaction_in_bounded_memory
	$(srcdir)/tests/fuzz/run.sh 3600 -runs=$${DTS_FUZZ_RUNS:-10000000}
