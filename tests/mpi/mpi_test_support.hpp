#pragma once
// Helpers shared by the MPI tests (tests/mpi/test_*.cpp). Everything works on
// MPI_COMM_WORLD. A helper marked "collective" must be called by every rank, in the same
// order as on the other ranks, or the test hangs; the others are local to the calling rank.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstddef>
#include <exception>
#include <optional>
#include <string>
#include <utility>

#include "test_support.hpp"

namespace swapcoord::test {

// This process's rank in MPI_COMM_WORLD (local).
inline int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

// The number of ranks in MPI_COMM_WORLD (local).
inline int world_size() {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

// True on every rank when `mine` is true on every rank (collective).
inline bool all_ranks(bool mine) {
  int value = mine ? 1 : 0, all = 0;
  MPI_Allreduce(&value, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
  return all != 0;
}

// `text` of rank `root`, on every rank (collective).
inline std::string broadcast_string(std::string text, int root = 0) {
  int length = static_cast<int>(text.size());
  MPI_Bcast(&length, 1, MPI_INT, root, MPI_COMM_WORLD);
  text.resize(static_cast<std::size_t>(length));
  MPI_Bcast(text.data(), length, MPI_CHAR, root, MPI_COMM_WORLD);
  return text;
}

// Runs `body`, which must throw E on this rank, and returns what(); `check` then looks at
// the exception on this rank. Checks that it threw on every rank (collective), so one rank
// that did not throw fails the test on all ranks.
template <class E, class F, class C>
std::string expect_throw_on_all_ranks(F&& body, C&& check) {
  bool threw = false;
  std::string message;
  try {
    body();
    ADD_FAILURE() << "rank " << world_rank() << ": no exception";
  } catch (const E& e) {
    threw = true;
    message = e.what();
    check(e);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "rank " << world_rank() << ": an exception of another type: " << e.what();
  }
  EXPECT_TRUE(all_ranks(threw)) << "the exception was not thrown on every rank";
  return message;
}

// The same without a check of the exception (collective).
template <class E, class F>
std::string expect_throw_on_all_ranks(F&& body) {
  return expect_throw_on_all_ranks<E>(std::forward<F>(body), [](const E&) {});
}

// Runs `body`, which must not throw on any rank (collective check).
template <class F>
void expect_no_throw_on_all_ranks(F&& body) {
  bool ok = true;
  try {
    body();
  } catch (const std::exception& e) {
    ok = false;
    ADD_FAILURE() << "rank " << world_rank() << ": " << e.what();
  }
  EXPECT_TRUE(all_ranks(ok)) << "some rank threw";
}

// A directory made by rank 0 and known to all ranks (they share this machine); removed by
// rank 0 after every rank is done with it. path() is empty on every rank if it could not
// be made. Construction and destruction are collective.
class SharedTempDir {
 public:
  SharedTempDir() {
    std::string path;
    if (world_rank() == 0) {
      try {
        _dir.emplace();
        path = _dir->path();
      } catch (const std::exception&) {
      }
    }
    _path = broadcast_string(path);
  }
  SharedTempDir(const SharedTempDir&) = delete;
  SharedTempDir& operator=(const SharedTempDir&) = delete;
  ~SharedTempDir() { MPI_Barrier(MPI_COMM_WORLD); }  // then _dir removes it on rank 0
  const std::string& path() const { return _path; }

 private:
  std::optional<TempDir> _dir;
  std::string _path;
};

}  // namespace swapcoord::test
