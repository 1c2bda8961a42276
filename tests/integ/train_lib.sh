# shellcheck shell=bash
# Shared by tests/integ/train_*.sh (sourced instead of lib.sh): the integration harness
# (tests/integ/lib.sh: the temp dir $T, cleanup, fail/skip/pass), a ferry that must be built,
# make_shards (tests/lib/llmc_shards.sh) and need_mpi.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$FERRY_SRC/tests/lib/llmc_shards.sh"
need_built "$FERRY"
need_python numpy

# need_mpi: SKIP where the build was configured without MPI (meson found none); FAIL where it
# was configured with MPI but mpirun or the data-parallel check is missing.
need_mpi() {
	build_has MPI || skip "built without MPI (meson found no MPI at configure time)"
	need_cmd mpirun
	need_built "$FERRY_BUILD/train/train_mpi_check"
}
