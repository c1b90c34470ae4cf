// The AMX tile configuration, shared by the kernels that use tiles (indexer_fp8_amx.cc, mla.cc). A thread holds one
// configuration at a time, so each user names its layout with an id and the configuration is reloaded only when
// another one is loaded. Internal to kernels/cpu; only called where use_amx_bf16() is true.
#pragma once

#include <cstdint>

namespace glance {

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};  // bytes per row of each tile register
  uint8_t rows[16] = {};
};

// Loads cfg into this thread's tile registers unless the configuration named id is loaded already (id != 0).
void load_tile_config(const TileConfig& cfg, uint32_t id);

}  // namespace glance
