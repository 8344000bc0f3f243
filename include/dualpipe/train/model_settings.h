#pragma once
// The settings of a model as they make up a run's identity (checkpoint.h):
// what a checkpoint and every rank of a run must share. Stateless functions;
// thread-safe.
#include <nlohmann/json.hpp>

#include <functional>

#include "dualpipe/train/models.h"

namespace dualpipe {

// Every field of ModelConfig, once, in declaration order, as it enters the
// run's identity: f(name, value, used). `used` is false for a field the model
// ignores (so that it cannot cause a refusal) and for one the identity takes
// from elsewhere (the schedule's stages and micro-batches, the mesh) or that
// differs between the ranks of one run (ep_rank). Values are the effective
// ones (--layers 0 as the layers it means; the corpus by its content).
// A field added to ModelConfig and not listed here fails to compile, so no
// setting can be left out of the identity by oversight.
void for_each_model_setting(const ModelConfig& model,
                            const std::function<void(const char* name, const nlohmann::ordered_json& value, bool used)>& f);

// The number of fields of ModelConfig, counted from the type itself.
int model_config_fields();

}  // namespace dualpipe
