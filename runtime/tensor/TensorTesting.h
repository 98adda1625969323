// A test hook of the tensor storage: while on, Tensor::uninitialised fills every new tensor
// with NaN, so that a result element that its op forgot to write shows up in the result.
#pragma once

namespace einjit::detail {

void setPoisonUninitialisedTensors(bool on);

}  // namespace einjit::detail
