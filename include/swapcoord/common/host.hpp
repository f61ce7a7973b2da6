#pragma once
// Where and when, as every message, record and report says it: the name of this host
// (gethostname; "unknown" when the system does not say) and the time in UTC
// ("2026-11-29T22:51:11Z").
#include <string>

namespace swapcoord {

std::string host_name();
std::string utc_now();

}  // namespace swapcoord
