#include "guest/file_tree.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "base/test_temp_dir.h"

namespace flurry {
namespace {

namespace fs = std::filesystem;

FileTreeEntry Entry(FileTreeType type, std::string path, uint64_t size = 0,
                    std::string target = "") {
  FileTreeEntry e;
  e.type = type;
  e.mode = type == FileTreeType::kDirectory ? 0755 : 0644;
  e.size = size;
  e.mtime_ns = 1'700'000'000'123'456'789;
  e.path = std::move(path);
  e.target = std::move(target);
  return e;
}

FileTree Sample() {
  FileTree tree;
  tree.entries.push_back(Entry(FileTreeType::kDirectory, "data"));
  tree.entries.push_back(Entry(FileTreeType::kRegular, "data/input.txt", 12));
  tree.entries.push_back(Entry(FileTreeType::kSymlink, "data/link", 0, "/etc/passwd"));
  tree.entries.push_back(Entry(FileTreeType::kRegular, "top", 0));
  return tree;
}

Result<FileTree> Decode(const std::vector<uint8_t>& bytes) {
  return DecodeFileTree(bytes.data(), bytes.size());
}

std::string DecodeError(const FileTree& tree) {
  auto decoded = Decode(EncodeFileTree(tree));
  return decoded ? "" : decoded.error().message();
}

TEST(FileTree, RoundTrips) {
  const FileTree tree = Sample();
  auto decoded = Decode(EncodeFileTree(tree));
  ASSERT_TRUE(decoded) << decoded.error().message();
  ASSERT_EQ(decoded->entries.size(), tree.entries.size());
  for (size_t i = 0; i < tree.entries.size(); ++i) {
    const FileTreeEntry& a = tree.entries[i];
    const FileTreeEntry& b = decoded->entries[i];
    EXPECT_EQ(a.type, b.type);
    EXPECT_EQ(a.mode, b.mode);
    EXPECT_EQ(a.size, b.size);
    EXPECT_EQ(a.mtime_ns, b.mtime_ns);
    EXPECT_EQ(a.path, b.path);
    EXPECT_EQ(a.target, b.target);
  }
}

TEST(FileTree, EveryTruncationIsRefused) {
  const std::vector<uint8_t> bytes = EncodeFileTree(Sample());
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_FALSE(DecodeFileTree(bytes.data(), n)) << "decoded " << n << " bytes";
  }
  std::vector<uint8_t> longer = bytes;
  longer.push_back(0);
  EXPECT_FALSE(Decode(longer));
}

TEST(FileTree, BadHeadersAreRefused) {
  std::vector<uint8_t> bytes = EncodeFileTree(Sample());
  std::vector<uint8_t> bad = bytes;
  bad[0] ^= 1;  // magic
  EXPECT_FALSE(Decode(bad));
  bad = bytes;
  bad[4] = 2;  // version
  EXPECT_FALSE(Decode(bad));
  bad = bytes;
  bad[6] = 1;  // reserved
  EXPECT_FALSE(Decode(bad));
  bad = bytes;
  bad[8] = 0xff;  // count beyond the entries
  bad[9] = 0xff;
  EXPECT_FALSE(Decode(bad));
  bad = bytes;
  bad[16] = 9;  // the first entry's type
  EXPECT_FALSE(Decode(bad));
}

TEST(FileTree, MalformedEntriesAreRefused) {
  for (const char* path : {"", "/abs", "a/", "a//b", ".", "..", "a/../b", "./a"}) {
    FileTree tree;
    tree.entries.push_back(Entry(FileTreeType::kRegular, path, 1));
    EXPECT_NE(DecodeError(tree), "") << path;
  }
  FileTree orphan;  // a child before its parent
  orphan.entries.push_back(Entry(FileTreeType::kRegular, "d/f", 1));
  orphan.entries.push_back(Entry(FileTreeType::kDirectory, "d"));
  EXPECT_NE(DecodeError(orphan), "");
  FileTree under_file;  // a path below a regular file or a symlink
  under_file.entries.push_back(Entry(FileTreeType::kRegular, "f", 1));
  under_file.entries.push_back(Entry(FileTreeType::kRegular, "f/g", 1));
  EXPECT_NE(DecodeError(under_file), "");
  FileTree under_link;
  under_link.entries.push_back(Entry(FileTreeType::kSymlink, "l", 0, "/"));
  under_link.entries.push_back(Entry(FileTreeType::kRegular, "l/etc", 1));
  EXPECT_NE(DecodeError(under_link), "");
  FileTree twice;
  twice.entries.push_back(Entry(FileTreeType::kRegular, "f", 1));
  twice.entries.push_back(Entry(FileTreeType::kRegular, "f", 1));
  EXPECT_NE(DecodeError(twice), "");
  FileTree mode;
  mode.entries.push_back(Entry(FileTreeType::kRegular, "f", 1));
  mode.entries[0].mode = 010644;
  EXPECT_NE(DecodeError(mode), "");
  FileTree dir_size;
  dir_size.entries.push_back(Entry(FileTreeType::kDirectory, "d", 5));
  EXPECT_NE(DecodeError(dir_size), "");
  FileTree huge;
  huge.entries.push_back(Entry(FileTreeType::kRegular, "f", kMaxFileTreeFileSize + 1));
  EXPECT_NE(DecodeError(huge), "");
  FileTree no_target;
  no_target.entries.push_back(Entry(FileTreeType::kSymlink, "l", 0, ""));
  EXPECT_NE(DecodeError(no_target), "");
  FileTree file_target;
  file_target.entries.push_back(Entry(FileTreeType::kRegular, "f", 1, "x"));
  EXPECT_NE(DecodeError(file_target), "");
  FileTree nul;
  nul.entries.push_back(Entry(FileTreeType::kRegular, std::string("a\0b", 3), 1));
  EXPECT_NE(DecodeError(nul), "");
}

TEST(FileTree, ScansADirectoryWithoutFollowingLinks) {
  TestTempDir temp("flurry-file-tree");
  ASSERT_FALSE(temp.path().empty());
  const fs::path root = temp.path();
  fs::create_directories(root / "sub" / "deeper");
  std::ofstream(root / "sub" / "a.txt") << "twelve bytes";
  std::ofstream(root / "b.bin") << "";
  chmod((root / "b.bin").c_str(), 0600);
  chmod((root / "sub").c_str(), 0711);
  fs::create_symlink("/", root / "sub" / "up");
  ASSERT_EQ(mkfifo((root / "fifo").c_str(), 0644), 0);
  const timespec times[2] = {{0, UTIME_OMIT}, {1'600'000'000, 5}};
  ASSERT_EQ(utimensat(AT_FDCWD, (root / "sub" / "a.txt").c_str(), times, 0), 0);

  auto dir = HostDir::Open(root.string(), false);
  ASSERT_TRUE(dir) << dir.error().message();
  auto tree = ScanFileTree(*dir);
  ASSERT_TRUE(tree) << tree.error().message();
  std::vector<std::string> paths;
  for (const auto& e : tree->entries) paths.push_back(e.path);
  EXPECT_EQ(paths, (std::vector<std::string>{"b.bin", "sub", "sub/a.txt", "sub/deeper", "sub/up"}));
  const auto& b = tree->entries[0];
  EXPECT_EQ(b.type, FileTreeType::kRegular);
  EXPECT_EQ(b.mode, 0600u);
  EXPECT_EQ(b.size, 0u);
  const auto& sub = tree->entries[1];
  EXPECT_EQ(sub.type, FileTreeType::kDirectory);
  EXPECT_EQ(sub.mode, 0711u);
  const auto& a = tree->entries[2];
  EXPECT_EQ(a.size, 12u);
  EXPECT_EQ(a.mtime_ns, 1'600'000'000'000'000'005);
  const auto& up = tree->entries[4];
  EXPECT_EQ(up.type, FileTreeType::kSymlink);
  EXPECT_EQ(up.target, "/");
  // What the scan makes, the decoder accepts.
  EXPECT_TRUE(Decode(EncodeFileTree(*tree)));
}

TEST(FileTree, PathSyntax) {
  EXPECT_TRUE(IsFileTreePath("a"));
  EXPECT_TRUE(IsFileTreePath("a/b.c/..d"));
  EXPECT_FALSE(IsFileTreePath("a/./b"));
  EXPECT_FALSE(IsFileTreePath(std::string(kMaxFileTreePath + 1, 'x')));
}

}  // namespace
}  // namespace flurry
