// cli/util.h — what the management verbs share: errors and exit codes,
// finding the mount (and store) behind a path, the control-channel client,
// output formats and the progress bar.
//
// Exit codes (docs/cli.md): 0 ok, 1 the operation failed, 2 usage error.
// A verb reports failure by throwing CliError; RunVerb prints it as one line
// "snapdisk: VERB: what and why" on stderr and exits with its code.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace snapdisk::cli {

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

struct CliError : std::runtime_error {
  CliError(int code, const std::string& what) : std::runtime_error(what), exit_code(code) {}
  int exit_code;
};

// "No such file or directory (ENOENT)"
std::string ErrnoText(int err);
// Throws CliError(1, "<what>: <ErrnoText(err)>").
[[noreturn]] void FailErrno(const std::string& what, int err);
[[noreturn]] void FailUsage(const std::string& what);

// Wraps a verb body for CLI11: prints a CliError as "snapdisk: VERB: ..."
// and turns it into CLI::RuntimeError(exit code).
std::function<void()> RunVerb(std::string verb, std::function<void()> body);

// A path inside a snapdisk mount.
struct MountRef {
  std::string mountpoint;  // absolute, no trailing '/'
  std::string store;       // the store directory (from the fsname snapdisk:STORE)
  std::string rel;         // path from the mount root; "" for the root
  std::string abs() const { return rel.empty() ? mountpoint : mountpoint + "/" + rel; }
  // MNT/.snapshots/REL
  std::string snapshots_dir() const {
    return mountpoint + "/.snapshots" + (rel.empty() ? "" : "/" + rel);
  }
};

// Finds the snapdisk mount holding `path` (which need not exist if its
// parent does) by /proc/self/mountinfo. Fails (exit 1) outside any mount.
MountRef Locate(const std::string& path);
// Locate() for an existing image (a regular file outside .snapshots).
MountRef LocateImage(const std::string& path);

// "IMG@SNAP" -> image, snapshot ("" when there is no '@').
void SplitAt(const std::string& spec, std::string* image, std::string* snapshot);

// One request on STORE/control.sock; returns "result" or throws CliError
// carrying the daemon's errno and message. Events go to `on_event`.
nlohmann::json ControlRequest(const MountRef& mount, const nlohmann::json& request,
                              const std::function<void(const nlohmann::json&)>& on_event = {});

// xattrs by path; Get returns false on ENODATA and throws on other errors.
bool GetXattr(const std::string& path, const std::string& name, std::string* value);
void SetXattr(const std::string& path, const std::string& name, const std::string& value);
std::vector<std::string> ListXattr(const std::string& path);

// -f table|json option on a verb.
void AddFormatOption(CLI::App* cmd, std::string* format);
bool IsJson(const std::string& format);
void PrintJson(const nlohmann::json& value);
// Left-aligned columns, a header row first.
void PrintTable(const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows);
std::string HumanBytes(uint64_t bytes);

// A progress bar on stderr when it is a terminal; silent otherwise.
class Progress {
 public:
  Progress(std::string label, uint64_t total);
  ~Progress();  // Finish()
  void Update(uint64_t done);
  void SetTotal(uint64_t total) { total_ = total; }
  void Finish();

 private:
  std::string label_;
  uint64_t total_;
  bool tty_;
  bool finished_ = false;
  int64_t last_draw_ms_ = 0;
};

double SecondsSince(int64_t start_ns);
int64_t NowNs();

}  // namespace snapdisk::cli
