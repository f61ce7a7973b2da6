# Finds the third-party packages. Each optional feature follows the ADIOS2 pattern:
# SWAPCOORD_USE_X (AUTO|ON|OFF) is what was asked, SWAPCOORD_HAVE_X what was found.
# ON but missing is a configure error; AUTO and missing is a line in the summary.
find_package(Threads REQUIRED)
find_package(fmt REQUIRED)
find_package(spdlog REQUIRED)
find_package(CLI11 REQUIRED)
set(MPI_DETERMINE_LIBRARY_VERSION TRUE)  # tells Open MPI apart (for --oversubscribe)
find_package(MPI REQUIRED COMPONENTS CXX)
find_package(PkgConfig REQUIRED)
pkg_check_modules(xxhash REQUIRED IMPORTED_TARGET libxxhash)

function(swapcoord_feature name found)
  string(TOUPPER "${SWAPCOORD_USE_${name}}" asked)
  if(asked STREQUAL "OFF")
    set(SWAPCOORD_HAVE_${name} OFF PARENT_SCOPE)
  elseif(${found})
    set(SWAPCOORD_HAVE_${name} ON PARENT_SCOPE)
  elseif(asked STREQUAL "ON")
    message(FATAL_ERROR "SWAPCOORD_USE_${name}=ON but it was not found")
  else()
    set(SWAPCOORD_HAVE_${name} OFF PARENT_SCOPE)
  endif()
endfunction()

find_package(LibAIO)
swapcoord_feature(LIBAIO LibAIO_FOUND)
find_package(LibUring)
swapcoord_feature(IO_URING LibUring_FOUND)

if(NOT SWAPCOORD_USE_CUDA STREQUAL "OFF")
  find_package(CUDAToolkit QUIET)
endif()
swapcoord_feature(CUDA CUDAToolkit_FOUND)
