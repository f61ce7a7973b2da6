#pragma once
// The name of this host (gethostname), as every message and report names it; "unknown"
// when the system does not say.
#include <string>

namespace swapcoord {

std::string host_name();

}  // namespace swapcoord
