// snapdisk_exerciser — long random operation sequences on image files in a
// directory (a snapdisk mount), every byte checked against an in-memory model.
//
//   snapdisk_exerciser --dir MNT [--seed S] [--ops N] [--threads N] [--max-size 16M]
//
// Exit status: 0 when every check passed; 1 on the first mismatch or
// unexpected error (with the seed, the command to reproduce it and the tail
// of the op log on stderr); 2 on a usage error.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>

#include "runs.h"
#include "util.h"

namespace {

using snapdisk::exerciser::Config;

[[noreturn]] void Usage(const char* why) {
  std::fprintf(stderr,
               "snapdisk_exerciser: %s\n"
               "usage: snapdisk_exerciser --dir DIR [--seed N] [--ops N] [--threads N] "
               "[--max-size BYTES[K|M|G]] [--project NAME] [--verbose] [--skip OP]...\n"
               "  --project NAME: work in DIR/NAME/ (created if absent), snapshots under "
               "DIR/.snapshots/NAME/\n",
               why);
  std::exit(2);
}

uint64_t ParseSize(const std::string& s) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s.c_str(), &end, 0);
  if (errno != 0 || end == s.c_str()) Usage(("bad number: " + s).c_str());
  std::string suffix(end);
  if (suffix == "K" || suffix == "k") v <<= 10;
  else if (suffix == "M" || suffix == "m") v <<= 20;
  else if (suffix == "G" || suffix == "g") v <<= 30;
  else if (!suffix.empty()) Usage(("bad size suffix: " + s).c_str());
  return v;
}

std::string SkipArgs(const Config& config) {
  std::string out;
  for (const std::string& op : config.skip) out += " --skip " + op;
  return out;
}

Config ParseArgs(int argc, char** argv) {
  Config config;
  bool have_seed = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    auto eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else if (arg == "-v" || arg == "--verbose") {
      config.verbose = true;
      continue;
    } else if (arg == "-h" || arg == "--help") {
      Usage("random model test of a snapdisk mount");
    } else {
      if (i + 1 >= argc) Usage(("missing value for " + arg).c_str());
      value = argv[++i];
    }
    if (arg == "--dir") config.dir = value;
    else if (arg == "--seed") { config.seed = ParseSize(value); have_seed = true; }
    else if (arg == "--ops") config.ops = ParseSize(value);
    else if (arg == "--threads") config.threads = static_cast<unsigned>(ParseSize(value));
    else if (arg == "--max-size") config.max_size = ParseSize(value);
    else if (arg == "--project") config.project = value;
    else if (arg == "--skip") config.skip.insert(value);
    else Usage(("unknown option " + arg).c_str());
  }
  if (config.dir.empty()) Usage("--dir is required");
  if (config.threads == 0) Usage("--threads must be at least 1");
  if (config.max_size < 4 * 1024 * 1024) Usage("--max-size must be at least 4M");
  if (!have_seed) config.seed = std::random_device{}() ^ static_cast<uint64_t>(time(nullptr));
  config.argv_line = std::string(argv[0]) + " --dir " + config.dir +
                     " --seed " + std::to_string(config.seed) + " --ops " +
                     std::to_string(config.ops) + " --threads " +
                     std::to_string(config.threads) + " --max-size " +
                     std::to_string(config.max_size) +
                     (config.project.empty() ? "" : " --project " + config.project) +
                     SkipArgs(config) +
                     "   (on a fresh, empty mount)";
  return config;
}

}  // namespace

int main(int argc, char** argv) {
  namespace ex = snapdisk::exerciser;
  Config config = ParseArgs(argc, argv);
  struct stat st;
  if (stat(config.dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) Usage("--dir is not a directory");
  if (!config.project.empty()) {
    std::string project_dir = config.dir + "/" + config.project;
    if (mkdir(project_dir.c_str(), 0755) != 0 && errno != EEXIST) Usage("cannot create the --project directory");
  }
  ex::OpLog log;
  ex::Counters counters;
  log.set_echo(config.verbose);
  ex::SetFailureContext(&config, &log);
  std::printf("snapdisk_exerciser: seed=%llu ops=%llu threads=%u max-size=%llu dir=%s\n",
              static_cast<unsigned long long>(config.seed),
              static_cast<unsigned long long>(config.ops), config.threads,
              static_cast<unsigned long long>(config.max_size), config.dir.c_str());
  std::fflush(stdout);
  auto start = std::chrono::steady_clock::now();
  if (config.threads == 1) {
    ex::RunSingle(config, log, counters);
  } else {
    ex::RunThreaded(config, log, counters);
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  counters.Print();
  std::printf("snapdisk_exerciser: PASS seed=%llu in %.1f s\n",
              static_cast<unsigned long long>(config.seed), secs);
  return 0;
}
