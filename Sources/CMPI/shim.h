// Open MPI's C API from Debian's libopenmpi-dev (pkg-config ompi-c). Only CLowRAComm includes it:
// MPI's handles are macros Swift cannot import, so the rest of LowRA sees lowra_comm.h instead.
#include <mpi.h>
