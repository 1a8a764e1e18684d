// CPU detection (cpuid, with the OS's state-saving support from XGETBV, and Linux's permission
// for the AMX tile data) and the kernel table chosen from it: the only place that knows which
// ISA levels exist.
#include "fastlstm/cpu.hpp"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "fastlstm/config.hpp"
#include "kernels/dispatch.hpp"

#if defined(__x86_64__) || defined(_M_X64)
#define FASTLSTM_X86 1
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

namespace fastlstm {
namespace detail {
namespace {

struct Features {
  bool sse2 = false, avx = false, avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false;
  bool avx512_bf16 = false, avx512_vnni = false, avx_vnni = false;
  bool amx_tile = false, amx_bf16 = false, amx_int8 = false;
  bool amx_permitted = false;  // Linux granted this process the tile data state
  std::string vendor, model;
};

#ifdef FASTLSTM_X86
uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (uint64_t(edx) << 32) | eax;
}

// Linux (5.16+) hands out the AMX tile data state only on request (arch_prctl
// ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA); the permission covers the whole process, its
// existing and future threads.
bool request_amx() {
#if defined(__linux__)
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}
#endif

Features detect() {
  Features f;
#ifdef FASTLSTM_X86
  unsigned a, b, c, d;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return f;
  const unsigned max_leaf = a;
  char vendor[13] = {};
  std::memcpy(vendor, &b, 4);
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &c, 4);
  f.vendor = vendor;
  unsigned ext = __get_cpuid_max(0x80000000u, nullptr);
  if (ext >= 0x80000004u) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      __get_cpuid(0x80000002u + i, &a, &b, &c, &d);
      std::memcpy(brand + 16 * i, &a, 4);
      std::memcpy(brand + 16 * i + 4, &b, 4);
      std::memcpy(brand + 16 * i + 8, &c, 4);
      std::memcpy(brand + 16 * i + 12, &d, 4);
    }
    f.model = brand;
    const auto s = f.model.find_first_not_of(' ');
    f.model = s == std::string::npos ? "" : f.model.substr(s);
  }
  __get_cpuid(1, &a, &b, &c, &d);
  f.sse2 = d & (1u << 26);
  const bool osxsave = c & (1u << 27);
  const bool fma = c & (1u << 12), avx = c & (1u << 28), f16c = c & (1u << 29);
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool os_avx = (xcr0 & 0x6) == 0x6;            // XMM and YMM state
  const bool os_avx512 = (xcr0 & 0xe6) == 0xe6;       // + opmask, ZMM_Hi256, Hi16_ZMM
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;    // XTILECFG, XTILEDATA
  f.avx = avx && os_avx;
  f.fma = fma && os_avx;
  f.f16c = f16c && os_avx;
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = (b & (1u << 5)) && os_avx;
    f.avx512f = (b & (1u << 16)) && os_avx512;
    f.avx512dq = (b & (1u << 17)) && os_avx512;
    f.avx512bw = (b & (1u << 30)) && os_avx512;
    f.avx512vl = (b & (1u << 31)) && os_avx512;
    f.avx512_vnni = (c & (1u << 11)) && os_avx512;
    f.amx_bf16 = (d & (1u << 22)) && os_amx;
    f.amx_tile = (d & (1u << 24)) && os_amx;
    f.amx_int8 = (d & (1u << 25)) && os_amx;
    const unsigned sub = a;
    if (sub >= 1) {
      __cpuid_count(7, 1, a, b, c, d);
      f.avx_vnni = (a & (1u << 4)) && os_avx;
      f.avx512_bf16 = (a & (1u << 5)) && os_avx512;
    }
  }
  if (f.amx_tile && f.amx_bf16 && f.amx_int8) f.amx_permitted = request_amx();
#endif
  return f;
}

// The features cpu_info() reports, by the names it uses (and FASTLSTM_CPU_HIDE takes).
struct FeatureName {
  const char* name;
  bool Features::*flag;
};
constexpr FeatureName kFeatureNames[] = {
    {"sse2", &Features::sse2},           {"avx", &Features::avx},
    {"avx2", &Features::avx2},           {"fma", &Features::fma},
    {"f16c", &Features::f16c},           {"avx512f", &Features::avx512f},
    {"avx512bw", &Features::avx512bw},   {"avx512dq", &Features::avx512dq},
    {"avx512vl", &Features::avx512vl},   {"avx512_bf16", &Features::avx512_bf16},
    {"avx512_vnni", &Features::avx512_vnni}, {"avx_vnni", &Features::avx_vnni},
    {"amx_tile", &Features::amx_tile},   {"amx_bf16", &Features::amx_bf16},
    {"amx_int8", &Features::amx_int8},
};

// FASTLSTM_CPU_HIDE=avx512f,amx_tile: features treated as absent, as if this CPU lacked them
// (to check what a smaller CPU gets, and to step around a feature a virtual machine reports but
// mishandles). A name that is not a feature is an error.
void hide_features(Features& f) {
  const char* env = std::getenv("FASTLSTM_CPU_HIDE");
  if (!env || !*env) return;
  std::string list(env);
  size_t start = 0;
  while (start <= list.size()) {
    size_t end = list.find(',', start);
    if (end == std::string::npos) end = list.size();
    const std::string name = list.substr(start, end - start);
    bool known = false;
    for (const FeatureName& fn : kFeatureNames)
      if (name == fn.name) {
        f.*fn.flag = false;
        known = true;
      }
    if (!known) {
      std::string names;
      for (const FeatureName& fn : kFeatureNames) names += (names.empty() ? "" : ", ") + std::string(fn.name);
      throw Error("FASTLSTM_CPU_HIDE: \"" + name + "\" is not a CPU feature name: expected a "
                  "comma-separated list of " + names);
    }
    start = end + 1;
  }
  if (!(f.amx_tile && f.amx_bf16 && f.amx_int8)) f.amx_permitted = false;
}

struct Level {
  const char* name;
  void (*fill)(KernelTable&);
};

// lowest first
#ifdef FASTLSTM_X86
constexpr Level kLevels[] = {
    {"generic", &generic::fill_kernels},
    {"avx2", &avx2::fill_kernels},
    {"avx512", &avx512::fill_kernels},
    {"avx512_bf16", &avx512_bf16::fill_kernels},
    {"amx", &amx::fill_kernels},
};
#else
constexpr Level kLevels[] = {{"generic", &generic::fill_kernels}};
#endif
constexpr int kNumLevels = int(sizeof(kLevels) / sizeof(kLevels[0]));

bool runs(const Features& f, int level) {
  switch (level) {
    case 0: return true;
    case 1: return f.avx2 && f.fma;
    case 2: return runs(f, 1) && f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl;
    case 3: return runs(f, 2) && f.avx512_bf16 && f.avx512_vnni;
    case 4: return runs(f, 3) && f.amx_tile && f.amx_bf16 && f.amx_int8 && f.amx_permitted;
    default: return false;
  }
}

struct State {
  Features features;
  int best = 0;     // the highest level this CPU runs
  int chosen = 0;   // capped by FASTLSTM_CPU
  KernelTable table;
};

std::string level_list() {
  std::string s;
  for (int i = 0; i < kNumLevels; ++i) s += (i ? ", " : "") + std::string(kLevels[i].name);
  return s;
}

State make_state() {
  State st;
  st.features = detect();
  hide_features(st.features);
  while (st.best + 1 < kNumLevels && runs(st.features, st.best + 1)) ++st.best;
  st.chosen = st.best;
  if (const char* env = std::getenv("FASTLSTM_CPU"); env && *env) {
    int want = -1;
    for (int i = 0; i < kNumLevels; ++i)
      if (std::strcmp(env, kLevels[i].name) == 0) want = i;
    if (want < 0)
      throw Error(std::string("FASTLSTM_CPU=") + env + " is not a kernel level of this build: "
                  "expected one of " + level_list());
    if (!runs(st.features, want))
      throw Error(std::string("FASTLSTM_CPU=") + env + ": this CPU (" + st.features.model +
                  ") cannot run the " + env + " kernels; it runs up to " +
                  kLevels[st.best].name);
    st.chosen = want;
  }
  kLevels[st.chosen].fill(st.table);
  st.table.level = kLevels[st.chosen].name;
  return st;
}

// Built on first use; a failure (a bad FASTLSTM_CPU) is thrown again on every later use.
const State& state() {
  static std::once_flag once;
  static State* st = nullptr;
  static std::string error;
  std::call_once(once, [] {
    try {
      st = new State(make_state());
    } catch (const Error& e) {
      error = e.what();
    }
  });
  if (!st) throw Error(error);
  return *st;
}

}  // namespace

const KernelTable& kernels() { return state().table; }

}  // namespace detail

CpuInfo cpu_info() {
  const auto& st = detail::state();
  const auto& f = st.features;
  CpuInfo info;
  info.vendor = f.vendor;
  info.model = f.model;
  for (const detail::FeatureName& fn : detail::kFeatureNames)
    if (f.*fn.flag) info.features.push_back(fn.name);
  for (int i = 0; i <= st.best; ++i) info.levels.push_back(detail::kLevels[i].name);
  info.level = detail::kLevels[st.chosen].name;
  return info;
}

}  // namespace fastlstm
