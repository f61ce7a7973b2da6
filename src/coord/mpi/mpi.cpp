#include "swapcoord/coord/mpi.hpp"

#include <fmt/format.h>

namespace swapcoord {

namespace {
std::string error_string(int code) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return fmt::format("MPI error {}", code);
  return std::string(text, static_cast<std::size_t>(length));
}
}  // namespace

MpiError::MpiError(std::string_view what, int code)
    : Error(fmt::format("{}: {}", what, error_string(code))), _code(code) {}

void mpi_check(int rc, std::string_view what) {
  if (rc != MPI_SUCCESS) throw MpiError(what, rc);
}

Comm Comm::dup(MPI_Comm comm) {
  MPI_Comm copy = MPI_COMM_NULL;
  mpi_check(MPI_Comm_dup(comm, &copy), "MPI_Comm_dup");
  Comm owned(copy);
  mpi_check(MPI_Comm_set_errhandler(copy, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  return owned;
}

int Comm::rank() const {
  int rank = 0;
  mpi_check(MPI_Comm_rank(_comm, &rank), "MPI_Comm_rank");
  return rank;
}

int Comm::size() const {
  int size = 0;
  mpi_check(MPI_Comm_size(_comm, &size), "MPI_Comm_size");
  return size;
}

void Comm::free() noexcept {
  if (_comm != MPI_COMM_NULL && _comm != MPI_COMM_WORLD && _comm != MPI_COMM_SELF) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&_comm);  // errors cannot be reported from here
  }
  _comm = MPI_COMM_NULL;
}

MpiSession::MpiSession(int* argc, char*** argv) {
  int initialized = 0;
  mpi_check(MPI_Initialized(&initialized), "MPI_Initialized");
  if (!initialized) {
    int provided = 0;
    mpi_check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    _owner = true;
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (_owner && !finalized) MPI_Finalize();
}

std::string mpi_library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int length = 0;
  MPI_Get_library_version(text, &length);
  std::string version(text, static_cast<std::size_t>(length));
  const auto end = version.find_first_of(",\n");
  return end == std::string::npos ? version : version.substr(0, end);
}

}  // namespace swapcoord
