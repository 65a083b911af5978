// Request bodies of the four dialects -> GenRequest (interfaces.md §3.4, §3.5). Every parser throws
// ApiError(400) for malformed or ill-typed input and never trusts a field's type.
#pragma once
#include <string_view>

#include "server/api.h"

namespace flashstar::server {

// `raw` is the request body exactly as received: tool schemas are rendered from its bytes (§2.4).
GenRequest parse_chat_request(const ojson& body, std::string_view raw);
GenRequest parse_completions_request(const ojson& body);
GenRequest parse_anthropic_request(const ojson& body, std::string_view raw);
GenRequest parse_responses_request(const ojson& body, std::string_view raw);

// The raw text of the value of `key` in a JSON object text, or "" when absent.
std::string_view raw_member(std::string_view object, std::string_view key);
// The raw texts of the elements of a JSON array text.
std::vector<std::string_view> raw_elements(std::string_view array);

}  // namespace flashstar::server
