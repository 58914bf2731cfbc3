// Version-1 contract digest (contract_v1.cpp): the only code that re-serialises Python's JSON.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace agiqa {

// sha256 of json.dumps(data minus program_sha256/program_bytes/contract_sha256,
// sort_keys=True, separators=(",", ":")), as Python writes it.
std::string contract_digest_v1(const nlohmann::json& data);

}  // namespace agiqa
