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
  snapdisk::cli::AddSnapshotCommands(app);
  snapdisk::cli::AddDataCommands(app);
  snapdisk::cli::AddSpaceCommands(app);
  // Usage errors: one line, exit 2 (docs/cli.md).
  app.failure_message([](const CLI::App* top, const CLI::Error& e) {
    // "snapdisk: snapshot create: --volume is required (see --help)"
    std::string verb;
    for (const CLI::App* at = top;;) {
      std::vector<CLI::App*> parsed = at->get_subcommands();
      if (parsed.empty()) break;
      at = parsed.front();
      verb += (verb.empty() ? "" : " ") + at->get_name();
    }
    return "snapdisk: " + (verb.empty() ? "" : verb + ": ") + e.what() + " (see --help)\n";
  });

  // mount -t fuse.snapdisk STORE MNT (mount.fuse3) runs `snapdisk STORE MNT
  // -o OPTS`: two leading positional arguments, the first not a subcommand,
  // mean `mount`.
  std::vector<std::string> args(argv + 1, argv + argc);
  auto positional = [&](size_t i) {
    return i < args.size() && !args[i].empty() && args[i][0] != '-';
  };
  // Only a path (it has a '/') counts as a store: a mistyped verb such as
  // `snapdisk fsk STORE` must be a usage error, not a mount of ./fsk.
  if (positional(0) && positional(1) && args[0].find('/') != std::string::npos &&
      !snapdisk::cli::IsSubcommand(app, args[0])) {
    args.insert(args.begin(), "mount");
  }
  std::reverse(args.begin(), args.end());  // CLI11 parses a reversed vector
  try {
    app.parse(args);
  } catch (const CLI::RuntimeError& e) {
    return e.get_exit_code();  // the verb printed its own message
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);  // prints help, the version or the usage error
    return rc == 0 ? 0 : 2;
  }
  return 0;
}
