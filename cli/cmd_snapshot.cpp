// snapdisk snapshot list|create|delete|set|show|protect|unprotect, rollback.
//
// Everything here goes through the mounted filesystem: mkdir/rmdir/rename in
// MNT/.snapshots, xattrs on snapshot directories, user.snapdisk.snapshot on
// .snapshots (group snapshots) and user.snapdisk.rollback on the image.
#include <dirent.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/util.h"

namespace snapdisk::cli {
namespace {

using nlohmann::json;

constexpr const char* kPropertyPrefix = "user.property.";

// IMG@NAME, or --volume/--name.
struct SnapshotRef {
  MountRef image;
  std::string name;
  std::string spec() const { return image.rel + "@" + name; }
  std::string dir() const { return image.snapshots_dir() + "/" + name; }
};

SnapshotRef ParseSnapshotRef(const std::string& spec, const std::string& volume,
                             const std::string& name) {
  std::string image = volume, snapshot = name;
  if (!spec.empty()) {
    if (!volume.empty() || !name.empty()) FailUsage("give IMG@NAME or --volume/--name, not both");
    SplitAt(spec, &image, &snapshot);
  }
  if (image.empty() || snapshot.empty()) FailUsage("expected IMG@NAME (or --volume IMG --name NAME)");
  return SnapshotRef{LocateImage(image), snapshot};
}

// Fails with ENOENT, naming the snapshot, unless its directory exists.
void RequireSnapshot(const SnapshotRef& ref) {
  struct stat st {};
  if (stat(ref.dir().c_str(), &st) != 0) {
    const int e = errno;
    FailErrno("snapshot " + ref.spec(), e);
  }
}

std::string Xattr(const std::string& path, const std::string& name) {
  std::string value;
  GetXattr(path, name, &value);
  return value;
}

uint64_t XattrNumber(const std::string& path, const std::string& name) {
  std::string value = Xattr(path, name);
  return value.empty() ? 0 : std::stoull(value);
}

// What `list` and `show` print about one snapshot.
json Describe(const SnapshotRef& ref, bool with_space) {
  const std::string dir = ref.dir();
  json out{{"image", ref.image.rel},
           {"name", ref.name},
           {"id", XattrNumber(dir, "user.snapdisk.id")},
           {"created", Xattr(dir, "user.snapdisk.created")},
           {"size", XattrNumber(dir, "user.snapdisk.size")},
           {"protected", Xattr(dir, "user.snapdisk.protected") == "1"},
           {"description", Xattr(dir, "user.description")}};
  json properties = json::object();
  for (const std::string& name : ListXattr(dir)) {
    if (name.rfind(kPropertyPrefix, 0) == 0) {
      properties[name.substr(std::string(kPropertyPrefix).size())] = Xattr(dir, name);
    }
  }
  out["properties"] = std::move(properties);
  if (with_space) {
    out["generation"] = XattrNumber(dir, "user.snapdisk.generation");
    out["referenced"] = XattrNumber(dir, "user.snapdisk.referenced");
    out["unique"] = XattrNumber(dir, "user.snapdisk.unique");
    std::string base = ref.image.rel.substr(ref.image.rel.rfind('/') + 1);
    out["path"] = dir + "/" + base;
  }
  return out;
}

std::vector<std::string> ListDir(const std::string& path) {
  DIR* dir = opendir(path.c_str());
  if (dir == nullptr) FailErrno(path, errno);
  std::vector<std::string> names;
  while (dirent* e = readdir(dir)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  closedir(dir);
  return names;
}

// Every image under `ref` (an image or a directory), by walking the live tree.
void CollectImages(const MountRef& ref, std::vector<MountRef>* images) {
  struct stat st {};
  if (stat(ref.abs().c_str(), &st) != 0) FailErrno(ref.abs(), errno);
  if (S_ISREG(st.st_mode)) {
    images->push_back(ref);
    return;
  }
  for (const std::string& name : ListDir(ref.abs())) {
    if (ref.rel.empty() && name == ".snapshots") continue;
    MountRef child = ref;
    child.rel = ref.rel.empty() ? name : ref.rel + "/" + name;
    CollectImages(child, images);
  }
}

std::string PropertiesText(const json& properties) {
  std::string text;
  for (const auto& [k, v] : properties.items()) {
    if (!text.empty()) text += ",";
    text += k + "=" + v.get<std::string>();
  }
  return text;
}

void PrintSnapshots(const json& list, const std::string& format) {
  if (IsJson(format)) return PrintJson(list);
  std::vector<std::vector<std::string>> rows;
  for (const json& s : list) {
    rows.push_back({s["image"], s["name"], std::to_string(s["id"].get<uint64_t>()), s["created"],
                    HumanBytes(s["size"]), s["protected"].get<bool>() ? "yes" : "no",
                    s["description"], PropertiesText(s["properties"])});
  }
  PrintTable({"IMAGE", "NAME", "ID", "CREATED", "SIZE", "PROTECTED", "DESCRIPTION", "PROPERTIES"},
             rows);
}

void SplitProperty(const std::string& kv, std::string* key, std::string* value) {
  size_t eq = kv.find('=');
  if (eq == std::string::npos || eq == 0) FailUsage("--property '" + kv + "': expected KEY=VALUE");
  *key = kv.substr(0, eq);
  *value = kv.substr(eq + 1);
}

void ApplyMetadata(const SnapshotRef& ref, const std::string* description,
                   const std::vector<std::string>& properties) {
  if (description != nullptr) {
    if (description->empty()) {
      if (lremovexattr(ref.dir().c_str(), "user.description") != 0 && errno != ENODATA) {
        FailErrno(ref.spec() + ": description", errno);
      }
    } else {
      SetXattr(ref.dir(), "user.description", *description);
    }
  }
  for (const std::string& kv : properties) {
    std::string key, value;
    SplitProperty(kv, &key, &value);
    SetXattr(ref.dir(), kPropertyPrefix + key, value);
  }
}

struct ListArgs {
  std::string volume, project, format;
};

void List(const ListArgs& args) {
  std::vector<MountRef> images;
  if (!args.volume.empty()) images.push_back(LocateImage(args.volume));
  if (!args.project.empty()) {
    MountRef project = Locate(args.project);
    CollectImages(project, &images);
  }
  if (args.volume.empty() && args.project.empty()) {
    MountRef here = Locate(".");
    here.rel.clear();
    CollectImages(here, &images);
  }
  json list = json::array();
  for (const MountRef& image : images) {
    for (const std::string& name : ListDir(image.snapshots_dir())) {
      SnapshotRef ref{image, name};
      struct stat st {};
      if (stat(ref.dir().c_str(), &st) != 0) continue;  // deleted meanwhile
      std::string id;
      if (!GetXattr(ref.dir(), "user.snapdisk.id", &id)) continue;  // a tombstone
      list.push_back(Describe(ref, false));
    }
  }
  PrintSnapshots(list, args.format);
}

struct CreateArgs {
  std::vector<std::string> volumes, properties;
  std::string name, description, format;
  bool has_description = false;
};

void Create(const CreateArgs& args) {
  std::vector<MountRef> images;
  for (const std::string& v : args.volumes) images.push_back(LocateImage(v));
  if (images.size() == 1) {
    SnapshotRef ref{images[0], args.name};
    if (mkdir(ref.dir().c_str(), 0755) != 0) FailErrno("snapshot " + ref.spec(), errno);
  } else {
    std::string value = args.name;
    for (const MountRef& image : images) {
      if (image.mountpoint != images[0].mountpoint) {
        FailUsage("a group snapshot's volumes must all be in one mount");
      }
      value += "\n" + image.rel;
    }
    const std::string root = images[0].mountpoint + "/.snapshots";
    if (lsetxattr(root.c_str(), "user.snapdisk.snapshot", value.data(), value.size(), 0) != 0) {
      FailErrno("group snapshot '" + args.name + "' of " + std::to_string(images.size()) +
                    " volumes",
                errno);
    }
  }
  json list = json::array();
  for (const MountRef& image : images) {
    SnapshotRef ref{image, args.name};
    ApplyMetadata(ref, args.has_description ? &args.description : nullptr, args.properties);
    list.push_back(Describe(ref, false));
  }
  PrintSnapshots(list, args.format);
}

struct SetArgs {
  std::string spec, volume, name, new_name, description;
  bool has_description = false, no_property = false;
  std::vector<std::string> properties;
};

void Set(const SetArgs& args) {
  SnapshotRef ref = ParseSnapshotRef(args.spec, args.volume, args.name);
  RequireSnapshot(ref);
  for (const std::string& kv : args.properties) {  // usage errors before any change
    std::string key, value;
    SplitProperty(kv, &key, &value);
  }
  if (args.no_property) {
    for (const std::string& name : ListXattr(ref.dir())) {
      if (name.rfind(kPropertyPrefix, 0) == 0 && lremovexattr(ref.dir().c_str(), name.c_str()) != 0) {
        FailErrno(ref.spec() + ": " + name, errno);
      }
    }
  }
  ApplyMetadata(ref, args.has_description ? &args.description : nullptr, args.properties);
  if (!args.new_name.empty() && args.new_name != ref.name) {
    SnapshotRef target{ref.image, args.new_name};
    struct stat st {};
    if (stat(target.dir().c_str(), &st) == 0) FailErrno("snapshot " + target.spec(), EEXIST);
    if (rename(ref.dir().c_str(), target.dir().c_str()) != 0) {
      FailErrno("rename " + ref.spec() + " to " + args.new_name, errno);
    }
  }
}

}  // namespace

void AddSnapshotCommands(CLI::App& app) {
  CLI::App* snap = app.add_subcommand("snapshot", "Manage snapshots (OpenStack-style verbs)");
  snap->require_subcommand(1);

  auto list = std::make_shared<ListArgs>();
  CLI::App* cmd = snap->add_subcommand("list", "List snapshots of an image, a project or the mount");
  cmd->add_option("--volume", list->volume, "Image (a path inside a mount)");
  cmd->add_option("--project", list->project, "Directory: every image under it");
  AddFormatOption(cmd, &list->format);
  cmd->callback(RunVerb("snapshot list", [list] { List(*list); }));

  auto create = std::make_shared<CreateArgs>();
  cmd = snap->add_subcommand("create", "Snapshot one image, or several at one instant (a group)");
  cmd->add_option("--volume", create->volumes, "Image to snapshot; repeat for a group snapshot")
      ->required();
  cmd->add_option("--name", create->name, "Snapshot name")->required();
  cmd->add_option("--description", create->description, "Free text")
      ->each([create](const std::string&) { create->has_description = true; });
  cmd->add_option("--property", create->properties, "KEY=VALUE; may repeat");
  AddFormatOption(cmd, &create->format);
  cmd->callback(RunVerb("snapshot create", [create] { Create(*create); }));

  auto del = std::make_shared<SetArgs>();
  cmd = snap->add_subcommand("delete", "Delete a snapshot (refused while protected: EBUSY)");
  cmd->add_option("SNAPSHOT", del->spec, "IMG@NAME");
  cmd->add_option("--volume", del->volume, "Image (with --name)");
  cmd->add_option("--name", del->name, "Snapshot name (with --volume)");
  cmd->callback(RunVerb("snapshot delete", [del] {
    SnapshotRef ref = ParseSnapshotRef(del->spec, del->volume, del->name);
    if (rmdir(ref.dir().c_str()) != 0) FailErrno("snapshot " + ref.spec(), errno);
  }));

  auto set = std::make_shared<SetArgs>();
  cmd = snap->add_subcommand("set", "Rename a snapshot or change its description and properties");
  cmd->add_option("SNAPSHOT", set->spec, "IMG@NAME")->required();
  cmd->add_option("--name", set->new_name, "New name");
  cmd->add_option("--description", set->description, "Free text (empty: remove)")
      ->each([set](const std::string&) { set->has_description = true; });
  cmd->add_option("--property", set->properties, "KEY=VALUE; may repeat");
  cmd->add_flag("--no-property", set->no_property, "Remove every property first");
  cmd->callback(RunVerb("snapshot set", [set] { Set(*set); }));

  auto show = std::make_shared<ListArgs>();
  cmd = snap->add_subcommand("show", "Show one snapshot, with its space use");
  cmd->add_option("SNAPSHOT", show->volume, "IMG@NAME")->required();
  AddFormatOption(cmd, &show->format);
  cmd->callback(RunVerb("snapshot show", [show] {
    SnapshotRef ref = ParseSnapshotRef(show->volume, "", "");
    RequireSnapshot(ref);
    json s = Describe(ref, true);
    if (IsJson(show->format)) return PrintJson(s);
    std::vector<std::vector<std::string>> rows;
    for (const char* key : {"image", "name", "id", "created", "size", "generation", "protected",
                            "description", "referenced", "unique", "path"}) {
      const json& v = s[key];
      rows.push_back({key, v.is_string() ? v.get<std::string>() : v.dump()});
    }
    rows.push_back({"properties", PropertiesText(s["properties"])});
    PrintTable({"FIELD", "VALUE"}, rows);
  }));

  for (bool protect : {true, false}) {
    auto spec = std::make_shared<std::string>();
    const std::string verb = protect ? "protect" : "unprotect";
    cmd = snap->add_subcommand(verb, protect ? "Protect a snapshot: deleting it fails with EBUSY"
                                             : "Allow deleting a snapshot again");
    cmd->add_option("SNAPSHOT", *spec, "IMG@NAME")->required();
    cmd->callback(RunVerb("snapshot " + verb, [spec, protect] {
      SnapshotRef ref = ParseSnapshotRef(*spec, "", "");
      RequireSnapshot(ref);
      SetXattr(ref.dir(), "user.snapdisk.protected", protect ? "1" : "0");
    }));
  }

  struct RollbackArgs {
    std::string image, name;
    bool force = false;
  };
  auto rb = std::make_shared<RollbackArgs>();
  cmd = app.add_subcommand("rollback",
                           "Make the live image read exactly as snapshot NAME (atomic; newer "
                           "snapshots are kept)");
  cmd->add_option("IMAGE", rb->image, "Image (a path inside a mount)")->required();
  cmd->add_option("NAME", rb->name, "Snapshot name")->required();
  cmd->add_flag("--force", rb->force, "Even while the image is open for writing");
  cmd->callback(RunVerb("rollback", [rb] {
    SnapshotRef ref{LocateImage(rb->image), rb->name};
    RequireSnapshot(ref);
    const int64_t start = NowNs();
    const std::string value = (rb->force ? "force:" : "") + rb->name;
    if (lsetxattr(ref.image.abs().c_str(), "user.snapdisk.rollback", value.data(), value.size(),
                  0) != 0) {
      const int e = errno;
      FailErrno("rollback of " + ref.image.rel + " to '" + rb->name + "'" +
                    (e == EBUSY ? " (the image is open for writing; --force overrides)" : ""),
                e);
    }
    std::printf("rolled back %s to %s in %.3f s\n", ref.image.rel.c_str(), rb->name.c_str(),
                SecondsSince(start));
  }));
}

}  // namespace snapdisk::cli
