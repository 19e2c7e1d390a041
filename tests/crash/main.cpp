// snapdisk_crash_workload — the helper of crash_loop.sh.
//
//   snapdisk_crash_workload run    --mnt MNT --journal FILE --seed S --cycle C [--threads N]
//                                  [--images N] [--image-size BYTES] [--max-seconds S]
//   snapdisk_crash_workload verify --mnt MNT --journal FILE --cycle C
//   snapdisk_crash_workload check  --store STORE
//
// run: exit 0 when stopped by the crash (or the time limit), 3 if an operation
// failed while the mount still answered. verify/check: 0 if all holds, 1 if
// not. 2: usage or journal errors.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "workload.h"

namespace {

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "snapdisk_crash_workload: %s\n"
               "usage: snapdisk_crash_workload run|verify --mnt MNT --journal FILE --cycle C "
               "[--seed S] [--threads N] [--images N] [--image-size BYTES] [--max-seconds S]\n"
               "       snapdisk_crash_workload check --store STORE\n",
               why.c_str());
  std::exit(2);
}

uint64_t Number(const std::string& s) {
  char* end = nullptr;
  unsigned long long v = std::strtoull(s.c_str(), &end, 0);
  if (end == s.c_str() || *end != '\0') Usage("bad number: " + s);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  namespace crash = snapdisk::crash;
  if (argc < 2) Usage("missing mode");
  std::string mode = argv[1];
  crash::WorkloadConfig config;
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    if (i + 1 >= argc) Usage("missing value for " + arg);
    std::string value = argv[++i];
    if (arg == "--mnt") config.mnt = value;
    else if (arg == "--journal") config.journal = value;
    else if (arg == "--store") config.store = value;
    else if (arg == "--seed") config.seed = Number(value);
    else if (arg == "--cycle") config.cycle = Number(value);
    else if (arg == "--threads") config.threads = static_cast<unsigned>(Number(value));
    else if (arg == "--images") config.images = static_cast<unsigned>(Number(value));
    else if (arg == "--image-size") config.image_size = Number(value);
    else if (arg == "--max-seconds") config.max_seconds = std::strtod(value.c_str(), nullptr);
    else Usage("unknown option " + arg);
  }
  if (mode == "check") {
    if (config.store.empty()) Usage("check needs --store");
    return crash::CheckStore(config);
  }
  if (config.mnt.empty() || config.journal.empty()) Usage(mode + " needs --mnt and --journal");
  if (config.cycle == 0 || config.cycle >= (1u << 23)) Usage("--cycle must be in [1, 2^23)");
  if (config.threads == 0 || config.images == 0 || config.image_size % 4096 != 0 ||
      config.image_size / 4096 < config.threads * 8) {
    Usage("bad --threads, --images or --image-size");
  }
  if (mode == "run") return crash::RunWorkload(config);
  if (mode == "verify") return crash::VerifyMount(config);
  Usage("unknown mode " + mode);
}
