# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# edged.cext.control: the deterministic control core, built from the ctl_*.pxi parts below.
# Threads: the asyncio thread builds objects and writes inputs (ProcessImage.write, seqlock write
# without the GIL); each CycleThread's native pthread runs its Program without ever taking the
# GIL; the asyncio thread drains the SampleRing and reads metrics. Each part says which of its
# functions run on which thread and whether they hold the GIL.
"""Deterministic control core: ProcessImage, SampleRing, Program (block interpreter) and CycleThread."""

include "ctl_sys.pxi"
include "ctl_image.pxi"
include "ctl_ring.pxi"
include "ctl_blocks.pxi"
include "ctl_program.pxi"
include "ctl_cycle.pxi"
