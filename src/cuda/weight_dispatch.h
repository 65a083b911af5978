// The one switch over weight types that every CUDA kernel family (reference and fast) dispatches through.
#pragma once
#include "common/error.h"
#include "quant/types.h"

namespace flashstar::cuda {

// Launch<T>::run(args...) for the weight type t; one-line failure for a type with no GPU kernels.
template <template <GgmlType> class Launch, typename... Args>
void dispatch_weight_type(GgmlType t, Args&&... args) {
  switch (t) {
    case GgmlType::F32: Launch<GgmlType::F32>::run(args...); break;
    case GgmlType::F16: Launch<GgmlType::F16>::run(args...); break;
    case GgmlType::BF16: Launch<GgmlType::BF16>::run(args...); break;
    case GgmlType::Q8_0: Launch<GgmlType::Q8_0>::run(args...); break;
    case GgmlType::Q2_K: Launch<GgmlType::Q2_K>::run(args...); break;
    case GgmlType::Q4_K: Launch<GgmlType::Q4_K>::run(args...); break;
    case GgmlType::IQ2_XXS: Launch<GgmlType::IQ2_XXS>::run(args...); break;
    default: fail("the GPU kernels have no path for weight type %s", type_name(t));
  }
}

}  // namespace flashstar::cuda
