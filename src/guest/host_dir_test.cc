#include "guest/host_dir.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace flurry {
namespace {

namespace fs = std::filesystem;

std::string ReadAll(int fd) {
  std::string data;
  char buf[256];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) data.append(buf, static_cast<size_t>(n));
  return data;
}

void WriteFile(const fs::path& path, const std::string& data) { std::ofstream(path) << data; }

// A temporary tree:
//   outside/sentinel       "SENTINEL"  (must never be reached)
//   root/                  the guest's "/"
//     file.txt             "hello"
//     sub/inner.txt        "inner"
//     outside/sentinel     "DECOY"      (what "/../outside/sentinel" means inside the root)
//     etc/passwd           "DECOY PASSWD"
//     link_etc -> /etc, link_up -> ../../, link_abs -> <host path of outside/sentinel>,
//     link_rel -> ../outside/sentinel, link_outdir -> <host path of outside>,
//     chain1 -> sub/chain2, sub/chain2 -> ../chain3, chain3 -> <host path of outside/sentinel>
class HostDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/flurry-hostdir-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    top_ = tmpl;
    outside_ = top_ / "outside";
    root_ = top_ / "root";
    fs::create_directories(outside_);
    fs::create_directories(root_ / "sub");
    fs::create_directories(root_ / "outside");
    fs::create_directories(root_ / "etc");
    WriteFile(outside_ / "sentinel", "SENTINEL");
    WriteFile(root_ / "file.txt", "hello");
    WriteFile(root_ / "sub/inner.txt", "inner");
    WriteFile(root_ / "outside/sentinel", "DECOY");
    WriteFile(root_ / "etc/passwd", "DECOY PASSWD");
    fs::create_directory_symlink("/etc", root_ / "link_etc");
    fs::create_directory_symlink("../../", root_ / "link_up");
    fs::create_symlink(outside_ / "sentinel", root_ / "link_abs");
    fs::create_symlink("../outside/sentinel", root_ / "link_rel");
    fs::create_directory_symlink(outside_, root_ / "link_outdir");
    fs::create_symlink("sub/chain2", root_ / "chain1");
    fs::create_symlink("../chain3", root_ / "sub/chain2");
    fs::create_symlink(outside_ / "sentinel", root_ / "chain3");
    struct stat st {};
    ASSERT_EQ(stat((outside_ / "sentinel").c_str(), &st), 0);
    sentinel_ino_ = st.st_ino;
    ASSERT_EQ(stat("/etc/passwd", &st), 0);
    passwd_ino_ = st.st_ino;
  }
  void TearDown() override { fs::remove_all(top_); }

  HostDir OpenRoot(bool writable) {
    Result<HostDir> dir = HostDir::Open(root_.string(), writable);
    EXPECT_TRUE(dir.has_value()) << dir.error().message();
    return std::move(*dir);
  }

  // Asserts an open result did not reach the host sentinel or /etc/passwd; returns the content
  // read, or "" when the open failed.
  std::string CheckConfined(const Result<UniqueFd>& fd, const std::string& what) {
    if (!fd) return "";
    struct stat st {};
    EXPECT_EQ(fstat(fd->get(), &st), 0);
    EXPECT_NE(st.st_ino, sentinel_ino_) << what << " reached the sentinel outside the root";
    EXPECT_NE(st.st_ino, passwd_ino_) << what << " reached the host's /etc/passwd";
    std::string content = ReadAll(fd->get());
    EXPECT_NE(content, "SENTINEL") << what;
    return content;
  }

  fs::path top_, outside_, root_;
  ino_t sentinel_ino_ = 0;
  ino_t passwd_ino_ = 0;
};

TEST_F(HostDirTest, OpenReportsMissingOrNonDirectory) {
  Result<HostDir> missing = HostDir::Open((top_ / "nope").string(), false);
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), ENOENT);
  EXPECT_EQ(missing.error().message(),
            "--dir " + (top_ / "nope").string() + ": No such file or directory");
  Result<HostDir> file = HostDir::Open((root_ / "file.txt").string(), false);
  ASSERT_FALSE(file.has_value());
  EXPECT_EQ(file.error().code(), ENOTDIR);
  Result<HostDir> ok = HostDir::Open(root_.string(), true);
  ASSERT_TRUE(ok.has_value());
  EXPECT_TRUE(ok->writable());
  EXPECT_EQ(ok->host_path(), root_.string());
}

TEST_F(HostDirTest, ARelativePathIsRecordedAbsolute) {
  // Descriptors (snapshots, clones) hold absolute paths only: `flurry run --dir data` works.
  const fs::path before = fs::current_path();
  fs::current_path(top_);
  Result<HostDir> dir = HostDir::Open(root_.filename().string() + "/", false);
  fs::current_path(before);
  ASSERT_TRUE(dir.has_value()) << dir.error().message();
  EXPECT_EQ(dir->host_path(), root_.string());
}

TEST_F(HostDirTest, ReadsFilesByAbsoluteAndRelativePaths) {
  HostDir dir = OpenRoot(false);
  for (const char* path : {"file.txt", "/file.txt", "./sub/../file.txt", "//file.txt"}) {
    Result<UniqueFd> fd = dir.OpenAt(path, O_RDONLY, 0);
    ASSERT_TRUE(fd.has_value()) << path << ": " << fd.error().message();
    EXPECT_EQ(ReadAll(fd->get()), "hello") << path;
  }
  Result<UniqueFd> missing = dir.OpenAt("/nope", O_RDONLY, 0);
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), ENOENT);
  EXPECT_EQ(dir.OpenAt("", O_RDONLY, 0).error().code(), ENOENT);
  EXPECT_EQ(dir.OpenAt("file.txt/", O_RDONLY, 0).error().code(), ENOTDIR);
}

TEST_F(HostDirTest, NoPathLeavesTheRoot) {
  HostDir dir = OpenRoot(true);
  // inotify on the outside directory catches any open of the sentinel.
  UniqueFd inotify(inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  ASSERT_TRUE(inotify.valid());
  ASSERT_GE(inotify_add_watch(inotify.get(), outside_.c_str(), IN_OPEN | IN_ACCESS | IN_MODIFY), 0);

  std::string host_sentinel = (outside_ / "sentinel").string();
  const std::string escapes[] = {
      "../outside/sentinel",
      "/../../outside/sentinel",
      "/../outside/sentinel",
      "../../../../../../../../" + host_sentinel,
      host_sentinel,
      "link_abs",
      "link_rel",
      "link_up/outside/sentinel",
      "link_up/link_up/outside/sentinel",
      "link_outdir/sentinel",
      "chain1",
      "sub/../../outside/sentinel",
      "sub/chain2",
      "link_etc/passwd",
      "/etc/passwd",
      "/proc/self/root" + host_sentinel,
  };
  for (const std::string& path : escapes) {
    for (int flags : {O_RDONLY, O_RDWR, O_RDONLY | O_CREAT}) {
      CheckConfined(dir.OpenAt(path, flags, 0644), path);
    }
    CheckConfined(dir.Lookup(HostDir::Base{}, path, true), path);
  }
  // Climbing above the root stops at the root (chroot semantics).
  EXPECT_EQ(CheckConfined(dir.OpenAt("../outside/sentinel", O_RDONLY, 0), "..."), "DECOY");
  EXPECT_EQ(CheckConfined(dir.OpenAt("link_rel", O_RDONLY, 0), "link_rel"), "DECOY");
  EXPECT_EQ(CheckConfined(dir.OpenAt("link_etc/passwd", O_RDONLY, 0), "link_etc"), "DECOY PASSWD");
  // An absolute symlink to the host's sentinel means that path inside the root: missing.
  EXPECT_EQ(dir.OpenAt("link_abs", O_RDONLY, 0).error().code(), ENOENT);
  EXPECT_EQ(dir.OpenAt("chain1", O_RDONLY, 0).error().code(), ENOENT);

  // From a directory fd inside the root: RESOLVE_BENEATH, then the root for "..".
  Result<UniqueFd> sub = dir.OpenAt("sub", O_RDONLY | O_DIRECTORY, 0);
  ASSERT_TRUE(sub.has_value());
  HostDir::Base base{sub->get(), "/sub"};
  for (const std::string& path : escapes) {
    CheckConfined(dir.OpenAt(base, path, O_RDONLY, 0), "sub + " + path);
    CheckConfined(dir.Lookup(base, path, true), "sub + " + path);
  }
  EXPECT_EQ(CheckConfined(dir.OpenAt(base, "../../outside/sentinel", O_RDONLY, 0), ".."), "DECOY");
  EXPECT_EQ(CheckConfined(dir.OpenAt(base, "../file.txt", O_RDONLY, 0), "../file.txt"), "hello");
  EXPECT_EQ(CheckConfined(dir.OpenAt(base, "inner.txt", O_RDONLY, 0), "inner.txt"), "inner");

  // Creating through escaping paths and dangling symlinks stays inside too.
  fs::create_symlink("../outside/created", root_ / "dangling_rel");
  fs::create_symlink(outside_ / "created", root_ / "dangling_abs");
  CheckConfined(dir.OpenAt("dangling_rel", O_WRONLY | O_CREAT, 0644), "dangling_rel");
  CheckConfined(dir.OpenAt("dangling_abs", O_WRONLY | O_CREAT, 0644), "dangling_abs");
  CheckConfined(dir.OpenAt("link_up/made", O_WRONLY | O_CREAT, 0644), "link_up/made");
  EXPECT_TRUE(fs::exists(root_ / "outside/created"));
  EXPECT_TRUE(fs::exists(root_ / "made"));
  EXPECT_FALSE(fs::exists(outside_ / "created"));
  EXPECT_FALSE(fs::exists(top_ / "made"));

  // Path operations on last components never follow a symlink out.
  EXPECT_EQ(dir.Unlink(HostDir::Base{}, "link_outdir/sentinel", false).error().code(), ENOENT);
  EXPECT_TRUE(dir.Unlink(HostDir::Base{}, "link_up/outside/sentinel", false).has_value());
  EXPECT_TRUE(dir.Mkdir(HostDir::Base{}, "link_up/newdir", 0755).has_value());
  EXPECT_TRUE(dir.Mkdir(base, "../../newdir2", 0755).has_value());
  EXPECT_TRUE(dir.Rename(HostDir::Base{}, "file.txt", base, "../../../moved", 0).has_value());
  EXPECT_TRUE(fs::exists(root_ / "newdir"));
  EXPECT_TRUE(fs::exists(root_ / "newdir2"));
  EXPECT_TRUE(fs::exists(root_ / "moved"));
  EXPECT_FALSE(fs::exists(top_ / "newdir"));
  EXPECT_FALSE(fs::exists(top_ / "newdir2"));
  EXPECT_FALSE(fs::exists(top_ / "moved"));
  Result<struct stat> st = dir.Stat(HostDir::Base{}, "link_outdir/sentinel", false);
  EXPECT_EQ(st.error().code(), ENOENT);
  Result<std::string> link = dir.Readlink(HostDir::Base{}, "link_up/link_abs");
  ASSERT_TRUE(link.has_value());
  EXPECT_EQ(*link, host_sentinel);  // the text of the symlink, not a resolution

  // The sentinel is intact and was never opened.
  EXPECT_TRUE(fs::exists(outside_ / "sentinel"));
  char events[4096];
  EXPECT_LT(read(inotify.get(), events, sizeof(events)), 0) << "something opened outside/";
  EXPECT_EQ(errno, EAGAIN);
}

TEST_F(HostDirTest, ReadOnlyRefusesEveryChange) {
  HostDir dir = OpenRoot(false);
  HostDir::Base root;
  EXPECT_EQ(dir.OpenAt("file.txt", O_WRONLY, 0).error().code(), EROFS);
  EXPECT_EQ(dir.OpenAt("file.txt", O_RDWR, 0).error().code(), EROFS);
  EXPECT_EQ(dir.OpenAt("file.txt", O_RDONLY | O_TRUNC, 0).error().code(), EROFS);
  EXPECT_EQ(dir.OpenAt("new.txt", O_WRONLY | O_CREAT, 0644).error().code(), EROFS);
  EXPECT_EQ(dir.OpenAt("new.txt", O_RDONLY | O_CREAT, 0644).error().code(), EROFS);
  EXPECT_EQ(dir.OpenAt("/", O_RDWR | O_TMPFILE, 0644).error().code(), EROFS);
  EXPECT_EQ(dir.OpenAt("file.txt", O_RDONLY | O_CREAT | O_EXCL, 0644).error().code(), EEXIST);
  EXPECT_EQ(dir.OpenAt("missing/new", O_WRONLY | O_CREAT, 0644).error().code(), ENOENT);
  EXPECT_EQ(dir.OpenAt("missing", O_WRONLY, 0).error().code(), ENOENT);
  EXPECT_EQ(dir.OpenAt("sub", O_WRONLY, 0).error().code(), EISDIR);
  // O_CREAT of an existing file for reading is an ordinary open.
  Result<UniqueFd> existing = dir.OpenAt("file.txt", O_RDONLY | O_CREAT, 0644);
  ASSERT_TRUE(existing.has_value());
  EXPECT_EQ(ReadAll(existing->get()), "hello");

  EXPECT_EQ(dir.Unlink(root, "file.txt", false).error().code(), EROFS);
  EXPECT_EQ(dir.Unlink(root, "sub", true).error().code(), EROFS);
  EXPECT_EQ(dir.Mkdir(root, "newdir", 0755).error().code(), EROFS);
  EXPECT_EQ(dir.Mkdir(root, "sub", 0755).error().code(), EEXIST);
  EXPECT_EQ(dir.Rename(root, "file.txt", root, "other", 0).error().code(), EROFS);
  EXPECT_EQ(dir.Access(root, "file.txt", W_OK, 0).error().code(), EROFS);
  EXPECT_TRUE(dir.Access(root, "file.txt", R_OK, 0).has_value());
  EXPECT_EQ(dir.Access(root, "nope", R_OK, 0).error().code(), ENOENT);

  EXPECT_TRUE(fs::exists(root_ / "file.txt"));
  EXPECT_FALSE(fs::exists(root_ / "new.txt"));
  EXPECT_FALSE(fs::exists(root_ / "newdir"));
  std::ifstream in(root_ / "file.txt");
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "hello");
}

TEST_F(HostDirTest, ReadWriteCreatesWritesAndRemoves) {
  HostDir dir = OpenRoot(true);
  HostDir::Base root;
  mode_t old_umask = umask(077);  // the guest's mode must win over the host umask
  Result<UniqueFd> fd = dir.OpenAt("/sub/new.txt", O_RDWR | O_CREAT | O_EXCL, 0654);
  ASSERT_TRUE(fd.has_value()) << fd.error().message();
  ASSERT_EQ(write(fd->get(), "written", 7), 7);
  ASSERT_EQ(lseek(fd->get(), 0, SEEK_SET), 0);
  EXPECT_EQ(ReadAll(fd->get()), "written");
  struct stat st {};
  ASSERT_EQ(stat((root_ / "sub/new.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0654u);

  // O_CREAT of an existing file neither recreates it nor changes its mode.
  Result<UniqueFd> again = dir.OpenAt("sub/new.txt", O_RDONLY | O_CREAT, 0600);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(ReadAll(again->get()), "written");
  ASSERT_EQ(stat((root_ / "sub/new.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0654u);
  EXPECT_EQ(dir.OpenAt("sub/new.txt", O_RDONLY | O_CREAT | O_EXCL, 0600).error().code(), EEXIST);

  Result<UniqueFd> trunc = dir.OpenAt("file.txt", O_WRONLY | O_TRUNC, 0);
  ASSERT_TRUE(trunc.has_value());
  EXPECT_EQ(fs::file_size(root_ / "file.txt"), 0u);

  ASSERT_TRUE(dir.Mkdir(root, "made", 0751).has_value());
  ASSERT_EQ(stat((root_ / "made").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0751u);
  umask(old_umask);
  EXPECT_EQ(dir.Mkdir(root, "made/", 0755).error().code(), EEXIST);
  EXPECT_EQ(dir.Mkdir(root, "/", 0755).error().code(), EEXIST);
  EXPECT_EQ(dir.Mkdir(root, "nope/x", 0755).error().code(), ENOENT);

  EXPECT_EQ(dir.Unlink(root, "made", false).error().code(), EISDIR);
  EXPECT_EQ(dir.Unlink(root, "sub", true).error().code(), ENOTEMPTY);
  EXPECT_EQ(dir.Unlink(root, "file.txt", true).error().code(), ENOTDIR);
  EXPECT_EQ(dir.Unlink(root, "file.txt/", false).error().code(), ENOTDIR);
  EXPECT_EQ(dir.Unlink(root, ".", true).error().code(), EINVAL);
  EXPECT_TRUE(dir.Unlink(root, "made/", true).has_value());
  EXPECT_TRUE(dir.Unlink(root, "/sub/new.txt", false).has_value());
  EXPECT_FALSE(fs::exists(root_ / "made"));
  EXPECT_FALSE(fs::exists(root_ / "sub/new.txt"));
  EXPECT_EQ(dir.Unlink(root, "sub/new.txt", false).error().code(), ENOENT);

  // Unlinking a symlink removes the link, not its target.
  EXPECT_TRUE(dir.Unlink(root, "link_rel", false).has_value());
  EXPECT_TRUE(fs::exists(root_ / "outside/sentinel"));

  ASSERT_TRUE(dir.Rename(root, "sub/inner.txt", root, "renamed.txt", 0).has_value());
  EXPECT_TRUE(fs::exists(root_ / "renamed.txt"));
  EXPECT_EQ(dir.Rename(root, "renamed.txt", root, "etc/passwd", RENAME_NOREPLACE).error().code(),
            EEXIST);
}

TEST_F(HostDirTest, StatReadlinkAndGuestPaths) {
  HostDir dir = OpenRoot(false);
  HostDir::Base root;
  Result<struct stat> link = dir.Stat(root, "link_rel", /*follow=*/false);
  ASSERT_TRUE(link.has_value());
  EXPECT_TRUE(S_ISLNK(link->st_mode));
  Result<struct stat> target = dir.Stat(root, "link_rel", /*follow=*/true);
  ASSERT_TRUE(target.has_value());
  EXPECT_TRUE(S_ISREG(target->st_mode));
  EXPECT_EQ(target->st_size, 5);  // "DECOY"
  EXPECT_EQ(dir.Stat(root, "link_abs", true).error().code(), ENOENT);

  Result<std::string> text = dir.Readlink(root, "/sub/chain2");
  ASSERT_TRUE(text.has_value());
  EXPECT_EQ(*text, "../chain3");
  EXPECT_EQ(dir.Readlink(root, "file.txt").error().code(), EINVAL);

  Result<UniqueFd> fd = dir.OpenAt("link_up/sub/./inner.txt", O_RDONLY, 0);
  ASSERT_TRUE(fd.has_value());
  EXPECT_EQ(dir.GuestPathOf(fd->get(), "fallback"), "/sub/inner.txt");
  Result<UniqueFd> top = dir.OpenAt("/..", O_RDONLY | O_DIRECTORY, 0);
  ASSERT_TRUE(top.has_value());
  EXPECT_EQ(dir.GuestPathOf(top->get(), "fallback"), "/");
  EXPECT_EQ(dir.GuestPathOf(0, "fallback"), "fallback");  // not inside the root

  EXPECT_EQ(HostDir::JoinGuestPath("/a", "b"), "/a/b");
  EXPECT_EQ(HostDir::JoinGuestPath("/", "b"), "/b");
  EXPECT_EQ(HostDir::JoinGuestPath("/a", "/b"), "/b");
}

}  // namespace
}  // namespace flurry
