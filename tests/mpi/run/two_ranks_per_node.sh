#!/bin/sh
# Makes two consecutive ranks one "node": SWAPCOORD_TEST_NODE = rank / 2 (Open MPI).
SWAPCOORD_TEST_NODE=$(( ${OMPI_COMM_WORLD_RANK:-0} / 2 ))
export SWAPCOORD_TEST_NODE
exec "$@"
