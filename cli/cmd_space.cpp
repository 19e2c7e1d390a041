// snapdisk df | du | fsck | scrub: space accounting and integrity checks.
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/util.h"
#include "fs/mount_table.h"
#include "snapdisk/store.h"

namespace snapdisk::cli {
namespace {

using nlohmann::json;

struct SpaceArgs {
  std::string path, format;
};

void Df(const SpaceArgs& args) {
  MountRef mount = Locate(args.path.empty() ? "." : args.path);
  json stats = ControlRequest(mount, {{"cmd", "stats"}});
  json usage = ControlRequest(mount, {{"cmd", "usage"}});
  json out{{"mountpoint", mount.mountpoint},
           {"store", mount.store},
           {"stats", stats},
           {"images", usage["images"]}};
  if (IsJson(args.format)) return PrintJson(out);
  std::printf("store %s on %s: %s stored, %s available of %s; %llu images, %llu snapshots, "
              "block size %llu\n",
              mount.store.c_str(), mount.mountpoint.c_str(),
              HumanBytes(stats["stored_bytes"]).c_str(),
              HumanBytes(stats["available_bytes"]).c_str(),
              HumanBytes(stats["capacity_bytes"]).c_str(),
              static_cast<unsigned long long>(stats["images"].get<uint64_t>()),
              static_cast<unsigned long long>(stats["snapshots"].get<uint64_t>()),
              static_cast<unsigned long long>(stats["block_size"].get<uint64_t>()));
  std::vector<std::vector<std::string>> rows;
  for (const json& i : usage["images"]) {
    rows.push_back({i["image"], HumanBytes(i["size"]), HumanBytes(i["referenced"]),
                    HumanBytes(i["unique"]), std::to_string(i["snapshot_count"].get<uint64_t>())});
  }
  PrintTable({"IMAGE", "SIZE", "USED", "UNIQUE", "SNAPSHOTS"}, rows);
}

void Du(const SpaceArgs& args) {
  MountRef image = LocateImage(args.path);
  json usage = ControlRequest(image, {{"cmd", "usage"}, {"image", image.rel}});
  if (IsJson(args.format)) return PrintJson(usage);
  std::vector<std::vector<std::string>> rows;
  rows.push_back({image.rel, "(live)", HumanBytes(usage["referenced"]), HumanBytes(usage["unique"])});
  for (const json& s : usage["snapshots"]) {
    rows.push_back({image.rel + "@" + s["name"].get<std::string>(), "snapshot",
                    HumanBytes(s["referenced"]), HumanBytes(s["unique"])});
  }
  PrintTable({"NAME", "KIND", "REFERENCED", "UNIQUE"}, rows);
}

json ReportJson(const CheckReport& r) {
  return json{{"versions_checked", r.versions_checked}, {"bytes_verified", r.bytes_verified},
              {"checksum_errors", r.checksum_errors},   {"index_errors", r.index_errors},
              {"problems", r.problems},                 {"clean", r.clean()}};
}

// Prints a check report; fails (exit 1) unless it is clean.
void PrintReport(const std::string& what, const json& r, const std::string& format) {
  if (IsJson(format)) {
    PrintJson(r);
  } else {
    std::printf("%s: %llu block versions, %s verified; %llu checksum errors, %llu index errors\n",
                what.c_str(), static_cast<unsigned long long>(r["versions_checked"].get<uint64_t>()),
                HumanBytes(r["bytes_verified"]).c_str(),
                static_cast<unsigned long long>(r["checksum_errors"].get<uint64_t>()),
                static_cast<unsigned long long>(r["index_errors"].get<uint64_t>()));
    for (const json& p : r["problems"]) std::printf("  %s\n", p.get<std::string>().c_str());
  }
  std::fflush(stdout);
  if (!r["clean"].get<bool>()) {
    throw CliError(kExitFailed, what + " is not clean: " +
                                    std::to_string(r["checksum_errors"].get<uint64_t>() +
                                                   r["index_errors"].get<uint64_t>()) +
                                    " errors (see above)");
  }
}

void Fsck(const SpaceArgs& args) {
  Options options;
  options.create_if_missing = false;
  options.background_gc = false;
  std::unique_ptr<Store> store;
  Status st = Store::Open(options, args.path, &store);
  if (!st.ok()) {
    std::string hint = st.Is(Status::Code::kBusy) ? "; " + fs::StoreInUseHint(args.path) : "";
    throw CliError(kExitFailed, "cannot open store " + args.path + ": " + st.ToString() + hint);
  }
  CheckReport report;
  Progress progress("fsck", 0);
  st = store->Check(&report, [&](uint64_t done, uint64_t total) {
    progress.SetTotal(total);
    progress.Update(done);
  });
  progress.Finish();
  if (!st.ok()) throw CliError(kExitFailed, "check of " + args.path + " failed: " + st.ToString());
  PrintReport("store " + args.path, ReportJson(report), args.format);
}

void Scrub(const SpaceArgs& args) {
  MountRef mount = Locate(args.path);
  Progress progress("scrub", 0);
  json r = ControlRequest(mount, {{"cmd", "check"}}, [&](const json& event) {
    progress.SetTotal(event.value("total", uint64_t{0}));
    progress.Update(event.value("done", uint64_t{0}));
  });
  progress.Finish();
  PrintReport("mount " + mount.mountpoint, r, args.format);
}

}  // namespace

void AddSpaceCommands(CLI::App& app) {
  auto df = std::make_shared<SpaceArgs>();
  CLI::App* cmd = app.add_subcommand("df", "Store space and exact per-image use of a mount");
  cmd->add_option("PATH", df->path, "Any path inside the mount (default: .)");
  AddFormatOption(cmd, &df->format);
  cmd->callback(RunVerb("df", [df] { Df(*df); }));

  auto du = std::make_shared<SpaceArgs>();
  cmd = app.add_subcommand("du", "Space referenced by and unique to an image and each snapshot");
  cmd->add_option("IMAGE", du->path, "Image (a path inside a mount)")->required();
  AddFormatOption(cmd, &du->format);
  cmd->callback(RunVerb("du", [du] { Du(*du); }));

  auto fsck = std::make_shared<SpaceArgs>();
  cmd = app.add_subcommand("fsck",
                           "Check an unmounted store offline: every checksum and the index "
                           "(exit 1 if not clean)");
  cmd->add_option("STORE", fsck->path, "Store directory")->required();
  AddFormatOption(cmd, &fsck->format);
  cmd->callback(RunVerb("fsck", [fsck] { Fsck(*fsck); }));

  auto scrub = std::make_shared<SpaceArgs>();
  cmd = app.add_subcommand("scrub",
                           "Check a mounted store online through its daemon (exit 1 if not "
                           "clean)");
  cmd->add_option("MOUNTPOINT", scrub->path, "The mount (or any path inside it)")->required();
  AddFormatOption(cmd, &scrub->format);
  cmd->callback(RunVerb("scrub", [scrub] { Scrub(*scrub); }));
}

}  // namespace snapdisk::cli
