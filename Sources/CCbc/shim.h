// The COIN-OR CBC mixed-integer solver's C interface (Debian coinor-libcbc-dev, Homebrew cbc), found through
// pkg-config's cbc.pc, which names its include directory and libraries. Optional: Package.swift builds
// without it when cbc.pc is absent (or LOWRA_CBC=0), and the ILP assigner then says how to add it.
#include <Cbc_C_Interface.h>
