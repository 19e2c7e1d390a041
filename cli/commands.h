// cli/commands.h — each group of subcommands registers itself on the app.
//
// A subcommand's callback reports failure by throwing CLI::RuntimeError(code)
// after printing its own message; main() turns that into the exit code.
#pragma once

#include <CLI/CLI.hpp>
#include <string_view>

namespace snapdisk::cli {

// mount, unmount (cmd_mount.cpp)
void AddMountCommands(CLI::App& app);
// snapshot list|create|delete|set|show|protect|unprotect, rollback (cmd_snapshot.cpp)
void AddSnapshotCommands(CLI::App& app);
// clone, diff, export, import (cmd_data.cpp)
void AddDataCommands(CLI::App& app);
// df, du, fsck, scrub (cmd_space.cpp)
void AddSpaceCommands(CLI::App& app);

// True if `word` names a registered subcommand (for mount.fuse3, which runs
// `snapdisk STORE MOUNTPOINT -o OPTS`).
bool IsSubcommand(const CLI::App& app, std::string_view word);

}  // namespace snapdisk::cli
