#pragma once
// SessionOptions: everything a SwapSession needs to know that is not the tensor list.
// Parsed from JSON by the library, in swapcoord's own form (sections `aio` and `swap`) or
// as a DeepSpeed `ds_config.json` (its `aio` and `zero_optimization` sections); every
// field can then be overridden in code (or by command-line flags in `swapcoord run`).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <mpi.h>

#include <nlohmann/json_fwd.hpp>

#include "swapcoord/common/checksum.hpp"
#include "swapcoord/common/dtype.hpp"
#include "swapcoord/coord/plan.hpp"
#include "swapcoord/io/aio_config.hpp"

namespace swapcoord {

struct SessionOptions {
  // swap
  std::vector<std::string> roots{"swapcoord-swap"};  // this node's swap roots (one per NVMe)
  bool create_roots = true;        // create missing roots (mkdir -p, 0700) instead of failing
  std::string catalog_dir;         // where catalog.h5 lives; every rank must reach it (a
                                   // shared filesystem). Empty: <rank 0's first root>/<job>,
                                   // allowed only when all ranks are on one node.
  bool overwrite = false;          // create(): replace a committed catalog found in catalog_dir
                                   // (default: refuse, naming it; resume() continues from it)
  std::string job = "swapcoord";   // directory under each root (one path component)
  PlanOptions plan;                // policy, layout, alignment
  int slots = 2;                   // 2: A/B per piece (a committed copy is never
                                   // overwritten before the next commit); 1: in place
  std::size_t buffer_count = 4;    // pinned staging buffers (>= 2)
  std::uint64_t buffer_size = 16ULL << 20;  // bytes per staging buffer (multiple of 4096)
  std::uint64_t prefetch_bytes = 0;  // pinned memory for prefetch(); 0: buffer_count x buffer_size
  bool pin_memory = true;          // false: staging in ordinary (unlocked) page-aligned memory
  bool verify = true;              // swap-in checks each piece's checksum against its swap-out
  ChecksumKind checksum = kDefaultChecksum;  // of a new job's pieces: xxh3_64 or xxh64 (the
                                   // catalog records it; a resumed job keeps its catalog's)
  std::string prepare = "write";   // new swap files at set-up: "write" fills them with zeros and
                                   // syncs them, so that the first swap-out into a slot is an
                                   // overwrite; "allocate" only reserves their blocks (faster
                                   // set-up, slower first swap-out: see README)
  // aio
  std::string backend = "libaio";
  bool register_io = false;        // io_uring: staging buffers and swap files registered with
                                   // the kernel (fixed buffers and files); aio.register
  AioConfig aio = [] {
    AioConfig c;
    c.fsync = true;  // commit() needs the data durable: fdatasync each written file once
    return c;
  }();
  // coordination
  double phase_timeout_s = 300;    // how long a collective call waits for every rank
  std::string node_key = "shared"; // shared | slurm | env:VAR (see coord/topology.hpp)
  // Called (from a watchdog thread) when a collective call that cannot take a deadline
  // (the catalog's collective HDF5 write, start-up exchanges) outlives phase_timeout_s:
  // a peer stopped responding. The library never ends the process itself; an application
  // that wants the job to end calls _exit or MPI_Abort here (`swapcoord run` does).
  // Empty: the message is logged and the call keeps waiting.
  std::function<void(const std::string& message)> on_stall;

  // Throws ConfigError naming the key of the first impossible value.
  void validate() const;
  nlohmann::json to_json() const;
};

// What a DeepSpeed config says beyond the session's options: which offload sections use
// NVMe and the parameter dtype.
struct DeepSpeedInfo {
  bool detected = false;           // the document had DeepSpeed sections
  bool offload_param = false;      // zero_optimization.offload_param.device == "nvme"
  bool offload_optimizer = false;  // zero_optimization.offload_optimizer.device == "nvme"
  int zero_stage = 0;
  DType param_dtype = DType::f32;  // fp16 -> f16, bf16 -> bf16, else f32
  std::vector<std::string> ignored_keys;  // top-level keys swapcoord does not use
};

// Applies the keys of a config document to `options`. Two forms are accepted:
//   swapcoord's: {"aio": {...}, "swap": {...}} (and other sections named in
//     `extra_sections`, left for the caller, e.g. "run");
//   DeepSpeed's ds_config.json: "aio" as is; "zero_optimization": "stage" (3 selects the
//     sharded policy), "offload_param" / "offload_optimizer" with "device": "nvme" give the
//     roots ("nvme_path"), "buffer_count", "buffer_size" (DeepSpeed counts ELEMENTS of the
//     parameter dtype; converted to bytes here) and "pin_memory"; "fp16" / "bf16"
//     {"enabled": true} set the parameter dtype. Top-level keys swapcoord does not use are
//     listed in DeepSpeedInfo::ignored_keys (logged once); unknown keys inside the
//     sections swapcoord reads are ConfigErrors naming the key.
// Sizes may be JSON integers or strings such as "16M" (binary multiples).
// `source` names the document in messages ("config 'c.json'").
// `log_ignored`: log the ignored keys (an MPI job passes true on one rank only).
DeepSpeedInfo apply_config(SessionOptions& options, const nlohmann::json& doc, const std::string& source,
                           const std::vector<std::string>& extra_sections = {}, bool log_ignored = true);

// Collective over `comm`: every rank passes its view of a configuration; a ConfigError on
// every rank when they differ, naming the first rank that differs from rank 0 and the
// first key (a dotted path) where they differ, with both values:
//   "ranks disagree on the configuration: rank 3 has swap.slots = 1, rank 0 has 2"
// `what` names the configuration in the message. SwapSession calls it with its options
// (less the roots, which may differ between nodes) at create and resume.
void check_config_agreement(MPI_Comm comm, const nlohmann::json& config, std::string_view what);

// Reads a JSON file (ConfigError naming the path when it cannot be read or parsed).
nlohmann::json read_config_file(const std::string& path);

// "4096", "64k", "16M", "1G", "1GiB", "2T" (binary multiples; case-insensitive) to bytes;
// ConfigError naming `what` otherwise.
std::uint64_t parse_size(std::string_view text, std::string_view what);

}  // namespace swapcoord
