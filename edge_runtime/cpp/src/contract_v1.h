// Version-1 contract digest (contract_v1.cpp), and the one C++ copy of Python's json.dumps string escaping.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace agiqa {

// sha256 of json.dumps(data minus program_sha256/program_bytes/contract_sha256,
// sort_keys=True, separators=(",", ":")), as Python writes it.
std::string contract_digest_v1(const nlohmann::json& data);

// Appends json.dumps(s) (ensure_ascii) to `out`: \" \\ \n \r \t \b \f, and \uXXXX (lowercase,
// surrogate pairs above U+FFFF) outside ' '..'~'. A byte that is not UTF-8 becomes U+DC80..U+DCFF,
// as Python's surrogateescape reads such a path.
void python_json_string(const std::string& s, std::string& out);

}  // namespace agiqa
