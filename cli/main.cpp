// snapdisk — mount a store of VM disk images and manage it.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <string>
#include <vector>

#include "cli/commands.h"

#ifndef SNAPDISK_VERSION
#define SNAPDISK_VERSION "unknown"
#endif

namespace snapdisk::cli {

bool IsSubcommand(const CLI::App& app, std::string_view word) {
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    if (sub->check_name(std::string(word))) return true;
  }
  return false;
}

}  // namespace snapdisk::cli

int main(int argc, char** argv) {
  CLI::App app{
      "snapdisk: a FUSE filesystem for VM disk images with instant snapshots and thin "
      "clones",
      "snapdisk"};
  app.set_version_flag("--version", std::string("snapdisk ") + SNAPDISK_VERSION);
  app.require_subcommand(1);
  snapdisk::cli::AddMountCommands(app);

  // mount -t fuse.snapdisk STORE MNT (mount.fuse3) runs `snapdisk STORE MNT
  // -o OPTS`: two leading positional arguments, the first not a subcommand,
  // mean `mount`.
  std::vector<std::string> args(argv + 1, argv + argc);
  auto positional = [&](size_t i) {
    return i < args.size() && !args[i].empty() && args[i][0] != '-';
  };
  if (positional(0) && positional(1) && !snapdisk::cli::IsSubcommand(app, args[0])) {
    args.insert(args.begin(), "mount");
  }
  std::reverse(args.begin(), args.end());  // CLI11 parses a reversed vector
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return 0;
}
