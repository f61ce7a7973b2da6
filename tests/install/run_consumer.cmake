# Installs the build tree into a scratch prefix, then configures, builds and runs the
# consumer project against it with find_package(swapcoord).
file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")
execute_process(COMMAND ${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${prefix}"
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "cmake --install failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S "${SOURCE_DIR}" -B "${WORK_DIR}/build" -G "${GENERATOR}"
                        "-DCMAKE_PREFIX_PATH=${prefix}" RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configuring the consumer failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build "${WORK_DIR}/build" RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "building the consumer failed (${rc})")
endif()
execute_process(COMMAND "${WORK_DIR}/build/consumer" "${WORK_DIR}" RESULT_VARIABLE rc
                OUTPUT_VARIABLE out ERROR_VARIABLE out)
message("${out}")
if(rc)
  message(FATAL_ERROR "the consumer failed (${rc})")
endif()
if(NOT out MATCHES "consumer: round trip OK")
  message(FATAL_ERROR "the consumer did not report its round trip")
endif()

# The Python package, when it was built: the installed copy imports from the prefix alone
# (its RPATH finds the installed libraries) and moves bytes with AioHandle.
if(PYTHON AND PYTHON_DIR)
  execute_process(
    COMMAND ${CMAKE_COMMAND} -E env "PYTHONPATH=${prefix}/${PYTHON_DIR}" --unset=LD_LIBRARY_PATH
            "${PYTHON}" -c "import os, sys, swapcoord, torch
assert swapcoord.__file__.startswith(sys.argv[1]), swapcoord.__file__
h = swapcoord.AioHandle()
t = torch.arange(1024, dtype=torch.float32)
path = os.path.join(sys.argv[1], 'py.bin')
h.sync_pwrite(t, path)
u = torch.zeros(1024)
h.sync_pread(u, path)
assert torch.equal(t, u)
print('consumer: python package OK from', swapcoord.__file__)" "${prefix}"
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  message("${out}")
  if(rc)
    message(FATAL_ERROR "the installed Python package failed (${rc})")
  endif()
endif()
