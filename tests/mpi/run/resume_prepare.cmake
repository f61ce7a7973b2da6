# PREPARE for the resume tests (check_run.cmake includes it after making WORK/root): a
# first job at PREPARE_NP ranks (balanced, 2 steps: epoch 2 committed, in slot 0) under
# WORK/root, the model of `small`; then, with -DCORRUPT=ON, one data byte of the committed
# epoch flipped on disk (byte 0 of rank 0's slot-0 slab: the first byte of its first piece).
#   -DPREPARE_NP=2  -DCORRUPT=ON  -DFLIP=path/to/flip_byte.sh
if(NOT DEFINED PREPARE_NP)
  set(PREPARE_NP 2)
endif()
execute_process(COMMAND ${MPIEXEC} ${PREPARE_NP} ${FLAGS} ${APP} run --scale 0.05 --steps 2 --buffer-size 1M
                        --phase-timeout 60 --roots "${WORK}/root"
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 240)
if(NOT rc STREQUAL "0")
  message(FATAL_ERROR "the first job (${PREPARE_NP} ranks) failed: exit code ${rc}\n${out}\n${err}")
endif()
if(NOT out MATCHES "commit +2 ")
  message(FATAL_ERROR "the first job did not commit epoch 2:\n${out}")
endif()
message("first job at ${PREPARE_NP} ranks: epoch 2 committed")
if(CORRUPT)
  execute_process(COMMAND ${FLIP} "${WORK}/root/swapcoord/rank-0/slot-0.swp" 0 RESULT_VARIABLE rc)
  if(NOT rc STREQUAL "0")
    message(FATAL_ERROR "could not damage ${WORK}/root/swapcoord/rank-0/slot-0.swp")
  endif()
endif()
