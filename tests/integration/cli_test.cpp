// The snapdisk management CLI on a real mount (docs/cli.md): every verb,
// its main errors and exit codes, JSON outputs parsed, and the group
// snapshot xattr (docs/snapshots.md). Data checks compare bytes; space
// checks use the exact accounting of the control channel.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "mount_fixture.h"

namespace snapdisk::testing {
namespace {

using nlohmann::json;
constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;

class CliTest : public MountFixture {
 protected:
  // Runs `snapdisk ARGS` (arguments already shell-quoted where needed).
  RunResult Cli(const std::string& args) { return Run(ShellQuote(daemon_bin()) + " " + args); }

  // Runs a verb that must succeed and prints JSON; returns it parsed.
  json CliJson(const std::string& args) {
    RunResult r = Cli(args);
    EXPECT_TRUE(r.ok()) << Describe("snapdisk " + args, r);
    json j = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << "not JSON: " << r.out;
    return j;
  }

  // A verb that must fail with exit code `code` and one stderr line holding
  // `needle`.
  void ExpectCliFails(const std::string& args, int code, const std::string& needle) {
    RunResult r = Cli(args);
    EXPECT_EQ(r.exit_code, code) << Describe("snapdisk " + args, r);
    EXPECT_NE(r.err.find(needle), std::string::npos) << Describe("snapdisk " + args, r);
    EXPECT_EQ(r.err.rfind("snapdisk: ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }

  void MakeImage(const std::string& rel, uint64_t size) {
    ASSERT_RUN_OK("truncate -s " + std::to_string(size) + " " + QP(rel));
  }
};

TEST_F(CliTest, SnapshotVerbsAndTheirErrors) {
  MakeImage("vm1.img", 16 * MiB);
  ASSERT_TRUE(PWrite(P("vm1.img"), 0, PatternBytes(MiB, 1)));
  json created = CliJson("snapshot create --volume " + QP("vm1.img") +
                         " --name s1 --description 'before upgrade' --property os=debian "
                         "--property tier=gold -f json");
  ASSERT_EQ(created.size(), 1u);
  EXPECT_EQ(created[0]["name"], "s1");
  EXPECT_EQ(created[0]["image"], "vm1.img");
  EXPECT_EQ(created[0]["description"], "before upgrade");
  EXPECT_EQ(created[0]["properties"], (json{{"os", "debian"}, {"tier", "gold"}}));
  EXPECT_EQ(created[0]["size"], 16 * MiB);

  ASSERT_TRUE(Cli("snapshot create --volume " + QP("vm1.img") + " --name s2").ok());
  json list = CliJson("snapshot list --volume " + QP("vm1.img") + " -f json");
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0]["name"], "s1");
  EXPECT_EQ(list[1]["name"], "s2");
  EXPECT_LT(list[0]["id"].get<uint64_t>(), list[1]["id"].get<uint64_t>());
  EXPECT_FALSE(list[0]["protected"].get<bool>());
  RunResult table = Cli("snapshot list --volume " + QP("vm1.img"));
  EXPECT_TRUE(table.ok());
  EXPECT_NE(table.out.find("before upgrade"), std::string::npos) << table.out;

  json show = CliJson("snapshot show " + QP("vm1.img@s1") + " -f json");
  EXPECT_EQ(show["referenced"], MiB);
  EXPECT_EQ(show["path"], P(".snapshots/vm1.img/s1/vm1.img"));

  // Errors: duplicate, missing, protected.
  ExpectCliFails("snapshot create --volume " + QP("vm1.img") + " --name s1", 1, "EEXIST");
  ExpectCliFails("snapshot show " + QP("vm1.img@nope"), 1, "No such file or directory (ENOENT)");
  ExpectCliFails("snapshot delete " + QP("vm1.img@nope"), 1, "ENOENT");
  ASSERT_TRUE(Cli("snapshot protect " + QP("vm1.img@s1")).ok());
  EXPECT_TRUE(CliJson("snapshot show " + QP("vm1.img@s1") + " -f json")["protected"].get<bool>());
  ExpectCliFails("snapshot delete " + QP("vm1.img@s1"), 1, "EBUSY");
  ASSERT_TRUE(Cli("snapshot unprotect " + QP("vm1.img@s1")).ok());

  // set: rename, description, properties.
  ASSERT_TRUE(Cli("snapshot set " + QP("vm1.img@s2") +
                  " --name nightly --description 'after' --property a=1")
                  .ok());
  json nightly = CliJson("snapshot show " + QP("vm1.img@nightly") + " -f json");
  EXPECT_EQ(nightly["description"], "after");
  EXPECT_EQ(nightly["properties"], (json{{"a", "1"}}));
  ASSERT_TRUE(Cli("snapshot set " + QP("vm1.img@nightly") + " --no-property --property b=2").ok());
  EXPECT_EQ(CliJson("snapshot show " + QP("vm1.img@nightly") + " -f json")["properties"],
            (json{{"b", "2"}}));
  ExpectCliFails("snapshot set " + QP("vm1.img@nightly") + " --name s1", 1, "EEXIST");

  // delete, both spellings.
  ASSERT_TRUE(Cli("snapshot delete " + QP("vm1.img@s1")).ok());
  ASSERT_TRUE(Cli("snapshot delete --volume " + QP("vm1.img") + " --name nightly").ok());
  EXPECT_EQ(CliJson("snapshot list --volume " + QP("vm1.img") + " -f json").size(), 0u);

  // Usage errors exit 2; --help works on every verb.
  ExpectCliFails("snapshot create --name x", 2, "--volume");
  ExpectCliFails("snapshot list --frobnicate", 2, "frobnicate");
  ExpectCliFails("snapshot show " + QP("vm1.img"), 2, "IMG@NAME");
  for (const char* verb :
       {"snapshot list", "snapshot create", "snapshot delete", "snapshot set", "snapshot show",
        "snapshot protect", "snapshot unprotect", "rollback", "clone", "diff", "export", "import",
        "df", "du", "fsck", "scrub"}) {
    RunResult r = Cli(std::string(verb) + " --help");
    EXPECT_TRUE(r.ok() && r.out.find("Usage") != std::string::npos) << Describe(verb, r);
  }
}

TEST_F(CliTest, RollbackRestoresTheSnapshotByteForByte) {
  MakeImage("vm1.img", 8 * MiB);
  const std::string before = PatternBytes(8 * MiB, 7);
  ASSERT_TRUE(PWrite(P("vm1.img"), 0, before));
  ASSERT_TRUE(Cli("snapshot create --volume " + QP("vm1.img") + " --name good").ok());
  ASSERT_TRUE(PWrite(P("vm1.img"), 3 * MiB, PatternBytes(2 * MiB, 8)));
  ASSERT_RUN_OK("truncate -s 12M " + QP("vm1.img"));
  ASSERT_TRUE(Cli("snapshot create --volume " + QP("vm1.img") + " --name newer").ok());

  RunResult r = Cli("rollback " + QP("vm1.img") + " good");
  ASSERT_TRUE(r.ok()) << Describe("rollback", r);
  EXPECT_NE(r.out.find("rolled back vm1.img to good"), std::string::npos) << r.out;
  EXPECT_EQ(ReadWholeFile(P("vm1.img")), before);
  // Newer snapshots are kept.
  EXPECT_EQ(CliJson("snapshot list --volume " + QP("vm1.img") + " -f json").size(), 2u);
  ExpectCliFails("rollback " + QP("vm1.img") + " missing", 1, "ENOENT");
  ExpectCliFails("rollback " + QP("vm1.img"), 2, "NAME");
}

TEST_F(CliTest, DiffReportsExactlyTheWrites) {
  MakeImage("vm1.img", 64 * MiB);
  ASSERT_TRUE(PWrite(P("vm1.img"), 0, PatternBytes(4 * MiB, 1)));
  ASSERT_TRUE(Cli("snapshot create --volume " + QP("vm1.img") + " --name a").ok());
  // Known writes: two adjacent 4 KiB pieces (merge into one extent), one
  // lone piece, and 1 MiB far out in a hole.
  ASSERT_TRUE(PWrite(P("vm1.img"), 40 * KiB, PatternBytes(8 * KiB, 2)));
  ASSERT_TRUE(PWrite(P("vm1.img"), 2 * MiB, PatternBytes(4 * KiB, 3)));
  ASSERT_TRUE(PWrite(P("vm1.img"), 32 * MiB, PatternBytes(MiB, 4)));
  ASSERT_TRUE(Cli("snapshot create --volume " + QP("vm1.img") + " --name b").ok());
  ASSERT_TRUE(PWrite(P("vm1.img"), 10 * MiB, PatternBytes(4 * KiB, 5)));

  const json expected_ab = json::array({json{{"offset", 40 * KiB}, {"length", 8 * KiB}},
                                        json{{"offset", 2 * MiB}, {"length", 4 * KiB}},
                                        json{{"offset", 32 * MiB}, {"length", MiB}}});
  json ab = CliJson("diff " + QP("vm1.img@a") + " " + QP("vm1.img@b") + " -f json");
  EXPECT_EQ(ab["extents"], expected_ab) << ab.dump();
  EXPECT_EQ(ab["bytes"], 8 * KiB + 4 * KiB + MiB);
  EXPECT_EQ(ab["from"], "a");
  EXPECT_EQ(ab["to"], "b");

  json b_live = CliJson("diff " + QP("vm1.img@b") + " " + QP("vm1.img") + " -f json");
  EXPECT_EQ(b_live["extents"], json::array({json{{"offset", 10 * MiB}, {"length", 4 * KiB}}}));
  EXPECT_TRUE(b_live["to"].is_null());

  RunResult table = Cli("diff " + QP("vm1.img@a") + " " + QP("vm1.img@b"));
  ASSERT_TRUE(table.ok());
  EXPECT_NE(table.out.find("33554432  1048576"), std::string::npos) << table.out;
  ExpectCliFails("diff " + QP("vm1.img@zz") + " " + QP("vm1.img"), 1, "ENOENT");
}

TEST_F(CliTest, ExportImportRoundTripStaysSparse) {
  MakeImage("vm1.img", 256 * MiB);
  ASSERT_TRUE(PWrite(P("vm1.img"), 0, PatternBytes(MiB, 1)));
  ASSERT_TRUE(PWrite(P("vm1.img"), 100 * MiB, PatternBytes(2 * MiB, 2)));
  ASSERT_TRUE(Cli("snapshot create --volume " + QP("vm1.img") + " --name s").ok());
  ASSERT_TRUE(PWrite(P("vm1.img"), 200 * MiB, PatternBytes(MiB, 3)));

  ASSERT_TRUE(Cli("export " + QP("vm1.img@s") + " " + QS("s.raw")).ok());
  struct stat st {};
  ASSERT_EQ(stat(Scratch("s.raw").c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 256 * MiB);
  EXPECT_LE(static_cast<uint64_t>(st.st_blocks) * 512, 4 * MiB) << "export is not sparse";
  EXPECT_EQ(Sha256(Scratch("s.raw")), Sha256(P(".snapshots/vm1.img/s/vm1.img")));

  // --since: only what changed after s.
  ASSERT_TRUE(Cli("export " + QP("vm1.img") + " " + QS("inc.raw") + " --since s").ok());
  ASSERT_EQ(stat(Scratch("inc.raw").c_str(), &st), 0);
  EXPECT_LE(static_cast<uint64_t>(st.st_blocks) * 512, 2 * MiB);
  EXPECT_EQ(PRead(Scratch("inc.raw"), 200 * MiB, MiB), PatternBytes(MiB, 3));
  EXPECT_EQ(PRead(Scratch("inc.raw"), 0, MiB), std::string(MiB, '\0'));

  ASSERT_TRUE(Cli("import " + QS("s.raw") + " " + QP("imported.img")).ok());
  EXPECT_EQ(Sha256(P("imported.img")), Sha256(Scratch("s.raw")));
  json du = CliJson("du " + QP("imported.img") + " -f json");
  EXPECT_EQ(du["referenced"], 3 * MiB) << "import stored holes";
  ExpectCliFails("import " + QS("s.raw") + " " + QP("imported.img"), 1, "EEXIST");
  ExpectCliFails("export " + QP("vm1.img@gone") + " " + QS("x.raw"), 1, "ENOENT");
}

TEST_F(CliTest, CloneFromSnapshotAndLive) {
  MakeImage("vm1.img", 32 * MiB);
  ASSERT_TRUE(PWrite(P("vm1.img"), 0, PatternBytes(4 * MiB, 1)));
  ASSERT_TRUE(Cli("snapshot create --volume " + QP("vm1.img") + " --name gold").ok());
  ASSERT_TRUE(PWrite(P("vm1.img"), 0, PatternBytes(MiB, 2)));
  RunResult r = Cli("clone " + QP("vm1.img@gold") + " " + QP("vm2.img"));
  ASSERT_TRUE(r.ok()) << Describe("clone", r);
  EXPECT_NE(r.out.find("cloned vm1.img@gold to vm2.img"), std::string::npos) << r.out;
  EXPECT_EQ(Sha256(P("vm2.img")), Sha256(P(".snapshots/vm1.img/gold/vm1.img")));
  ASSERT_TRUE(Cli("clone " + QP("vm1.img") + " " + QP("vm3.img")).ok());
  EXPECT_EQ(Sha256(P("vm3.img")), Sha256(P("vm1.img")));
  std::string origin(256, '\0');
  ssize_t n = getxattr(P("vm2.img").c_str(), "user.snapdisk.origin", origin.data(), origin.size());
  ASSERT_GT(n, 0);
  EXPECT_EQ(origin.substr(0, static_cast<size_t>(n)), "vm1.img@gold");
  ExpectCliFails("clone " + QP("vm1.img") + " " + QP("vm2.img"), 1, "EEXIST");
}

TEST_F(CliTest, GroupSnapshotThroughXattrAndCli) {
  ASSERT_EQ(mkdir(P("team").c_str(), 0755), 0);
  MakeImage("team/a.img", 4 * MiB);
  MakeImage("team/b.img", 4 * MiB);
  MakeImage("other.img", 4 * MiB);
  ASSERT_TRUE(PWrite(P("team/a.img"), 0, PatternBytes(MiB, 1)));
  ASSERT_TRUE(PWrite(P("team/b.img"), 0, PatternBytes(MiB, 2)));

  // The filesystem way: one setfattr on the project's mirror.
  ASSERT_RUN_OK("setfattr -n user.snapdisk.snapshot -v nightly " + QP(".snapshots/team"));
  json team = CliJson("snapshot list --project " + QP("team") + " -f json");
  ASSERT_EQ(team.size(), 2u);
  std::set<std::string> images;
  for (const json& s : team) {
    EXPECT_EQ(s["name"], "nightly");
    images.insert(s["image"]);
  }
  EXPECT_EQ(images, (std::set<std::string>{"team/a.img", "team/b.img"}));
  EXPECT_EQ(team[0]["created"], team[1]["created"]) << "one instant";
  struct stat st {};
  EXPECT_NE(stat(P(".snapshots/other.img/nightly").c_str(), &st), 0);
  RunResult dup =
      Run("setfattr -n user.snapdisk.snapshot -v nightly " + QP(".snapshots/team") + " 2>&1");
  EXPECT_FALSE(dup.ok());
  EXPECT_NE(dup.out.find("File exists"), std::string::npos) << dup.out;

  // An explicit list on .snapshots.
  const std::string value = std::string("pair\nteam/a.img\nother.img");
  ASSERT_EQ(setxattr(P(".snapshots").c_str(), "user.snapdisk.snapshot", value.data(), value.size(),
                     0),
            0)
      << strerror(errno);
  EXPECT_EQ(stat(P(".snapshots/other.img/pair").c_str(), &st), 0);
  EXPECT_EQ(stat(P(".snapshots/team/a.img/pair").c_str(), &st), 0);
  EXPECT_NE(stat(P(".snapshots/team/b.img/pair").c_str(), &st), 0);

  // The CLI way: several --volume make a group; all or none.
  json created = CliJson("snapshot create --volume " + QP("team/b.img") + " --volume " +
                         QP("other.img") + " --name g --description grp -f json");
  ASSERT_EQ(created.size(), 2u);
  EXPECT_EQ(created[0]["created"], created[1]["created"]);
  EXPECT_EQ(created[1]["description"], "grp");
  ExpectCliFails("snapshot create --volume " + QP("team/a.img") + " --volume " + QP("other.img") +
                     " --name g",
                 1, "EEXIST");
  EXPECT_NE(stat(P(".snapshots/team/a.img/g").c_str(), &st), 0) << "all or none";
  // The group snapshot is bit-identical per image.
  EXPECT_EQ(PRead(P(".snapshots/team/b.img/g/b.img"), 0, MiB), PatternBytes(MiB, 2));
}

TEST_F(CliTest, SnapshotUniqueGrowsByWhatIsOverwritten) {
  MakeImage("vm1.img", 64 * MiB);
  ASSERT_RUN_OK("dd if=/dev/urandom of=" + QP("vm1.img") +
                " bs=1M count=32 conv=notrunc,fsync status=none");
  ASSERT_TRUE(Cli("snapshot create --volume " + QP("vm1.img") + " --name s").ok());
  json before = CliJson("du " + QP("vm1.img") + " -f json");
  ASSERT_EQ(before["snapshots"].size(), 1u);
  const uint64_t unique_before = before["snapshots"][0]["unique"];

  // N = 8 MiB in 4 KiB pieces, every other piece of the first 16 MiB (no two
  // adjacent: each is its own extent).
  constexpr uint64_t kPieces = 8 * MiB / (4 * KiB);
  const std::string piece_data = PatternBytes(4 * KiB * kPieces, 9);
  int fd = open(P("vm1.img").c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  for (uint64_t i = 0; i < kPieces; ++i) {
    ASSERT_EQ(pwrite(fd, piece_data.data() + i * 4 * KiB, 4 * KiB, static_cast<off_t>(i * 8 * KiB)),
              static_cast<ssize_t>(4 * KiB));
  }
  ASSERT_EQ(fsync(fd), 0);
  close(fd);

  json after = CliJson("du " + QP("vm1.img") + " -f json");
  const uint64_t unique_after = after["snapshots"][0]["unique"];
  const uint64_t grown = unique_after - unique_before;
  // Within one 4 KiB piece per extent of the exact amount.
  EXPECT_GE(grown + kPieces * 4 * KiB, 8 * MiB) << "grew by " << grown;
  EXPECT_LE(grown, 8 * MiB + kPieces * 4 * KiB) << "grew by " << grown;
  EXPECT_EQ(after["snapshots"][0]["referenced"], 32 * MiB);
  EXPECT_EQ(after["referenced"], 32 * MiB);

  // df agrees with du for the live image.
  json df = CliJson("df " + QP("") + " -f json");
  ASSERT_EQ(df["images"].size(), 1u);
  EXPECT_EQ(df["images"][0]["image"], "vm1.img");
  EXPECT_EQ(df["images"][0]["unique"], after["unique"]);
  EXPECT_EQ(df["stats"]["snapshots"], 1u);
  EXPECT_EQ(df["stats"]["images"], 1u);
}

TEST_F(CliTest, ScrubOnlineFsckOffline) {
  MakeImage("vm1.img", 8 * MiB);
  ASSERT_TRUE(PWrite(P("vm1.img"), 0, PatternBytes(2 * MiB, 1), /*fsync=*/true));
  json scrub = CliJson("scrub " + ShellQuote(mountpoint()) + " -f json");
  EXPECT_TRUE(scrub["clean"].get<bool>());
  EXPECT_GT(scrub["bytes_verified"].get<uint64_t>(), 0u);
  ExpectCliFails("fsck " + ShellQuote(store()), 1, "in use");
  ExpectCliFails("fsck " + ShellQuote(store()), 1, "mounted at " + mountpoint() + ": unmount it first");

  // The control channel survives bad input.
  const std::string sock = store() + "/control.sock";
  struct stat st {};
  ASSERT_EQ(stat(sock.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  RunResult bad = Run(
      "python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
      "s.sendall(b\"{not json\\n{\\\"cmd\\\":\\\"nope\\\"}\\n{\\\"cmd\\\":\\\"diff\\\","
      "\\\"image\\\":7}\\n\"); f=s.makefile(); [print(f.readline().strip()) for _ in range(3)]' " +
      ShellQuote(sock));
  ASSERT_TRUE(bad.ok()) << Describe("python3 control", bad);
  std::istringstream lines(bad.out);
  std::string line;
  int responses = 0;
  while (std::getline(lines, line)) {
    json j = json::parse(line, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << line;
    EXPECT_FALSE(j["ok"].get<bool>());
    EXPECT_EQ(j["error"]["errno"], EINVAL) << line;
    ++responses;
  }
  EXPECT_EQ(responses, 3);
  EXPECT_TRUE(CliJson("scrub " + ShellQuote(mountpoint()) + " -f json")["clean"].get<bool>());

  Unmount();
  json fsck = CliJson("fsck " + ShellQuote(store()) + " -f json");
  EXPECT_TRUE(fsck["clean"].get<bool>());
  EXPECT_EQ(fsck["bytes_verified"], scrub["bytes_verified"]);
  Mount();
}

}  // namespace
}  // namespace snapdisk::testing
