// Hugging Face (or official DeepSeek) config.json → ModelConfig.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "model/config.h"

namespace flashstar::convert {

// Maps the JSON to a validated ModelConfig. Keys that fix tensor shapes are required (one-line error
// naming the key); numeric constants with a published default (eps, rope scaling, hc settings) fall back
// to the Flash value and are listed in *defaulted.
ModelConfig config_from_json(const nlohmann::json& j, std::vector<std::string>* defaulted = nullptr);
ModelConfig read_hf_config(const std::string& path, std::vector<std::string>* defaulted = nullptr);

}  // namespace flashstar::convert
