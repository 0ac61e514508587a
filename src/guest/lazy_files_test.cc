#include "guest/lazy_files.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>

#include "base/test_temp_dir.h"
#include "guest/host_dir.h"

namespace flurry {
namespace {

namespace fs = std::filesystem;

// The parent's files, in memory; counts what is read.
struct FakeFiles {
  std::map<uint32_t, std::string> contents;  // tree index -> bytes
  int reads = 0;
  bool fail = false;
};

class FakeSource : public FileSource {
 public:
  explicit FakeSource(FakeFiles* files) : files_(files) {}
  Result<std::vector<uint8_t>> FetchFileTree() override { return FailErrno(ENOSYS, "fake"); }
  Result<uint32_t> ReadFile(uint32_t index, uint64_t offset, uint8_t* out, uint32_t max) override {
    ++files_->reads;
    if (files_->fail) return FailErrno(ECONNREFUSED, "fake source");
    const std::string& data = files_->contents.at(index);
    if (offset >= data.size()) return 0u;
    const auto n = static_cast<uint32_t>(std::min<uint64_t>(max, data.size() - offset));
    std::memcpy(out, data.data() + offset, n);
    return n;
  }
  std::string Describe() const override { return "fake"; }

 private:
  FakeFiles* files_;
};

void WriteFile(const fs::path& path, const std::string& data) {
  FILE* f = fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  fwrite(data.data(), 1, data.size(), f);
  fclose(f);
}

std::string ReadFile(const fs::path& path) {
  std::string data;
  FILE* f = fopen(path.c_str(), "r");
  if (f == nullptr) return "(missing)";
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) data.append(buf, n);
  fclose(f);
  return data;
}

std::string ReadAll(int fd) {
  std::string data;
  char buf[65536];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) data.append(buf, static_cast<size_t>(n));
  return data;
}

class LazyFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(temp_.path().empty());
    big_.resize(3 * 1024 * 1024 + 17);
    for (size_t i = 0; i < big_.size(); ++i) big_[i] = static_cast<char>('a' + i % 23);
    files_.contents = {{1, "hello, clone\n"}, {2, big_}, {4, "read only\n"}, {5, "gone\n"}};
    Add(FileTreeType::kDirectory, "data", 0, 0750);
    Add(FileTreeType::kRegular, "data/hello.txt", 13, 0644);
    Add(FileTreeType::kRegular, "data/big.bin", big_.size(), 0600);
    Add(FileTreeType::kSymlink, "data/link", 0, 0777, "hello.txt");
    Add(FileTreeType::kRegular, "ro.txt", 10, 0444);
    Add(FileTreeType::kRegular, "gone.txt", 5, 0644);
    Add(FileTreeType::kRegular, "empty", 0, 0644);
  }

  void Add(FileTreeType type, std::string path, uint64_t size, uint32_t mode,
           std::string target = "") {
    FileTreeEntry e;
    e.type = type;
    e.path = std::move(path);
    e.size = size;
    e.mode = mode;
    e.mtime_ns = 1'650'000'000'000'000'007;
    e.target = std::move(target);
    tree_.entries.push_back(std::move(e));
  }

  // Lays the tree out and opens it as a writable guest root.
  HostDir Root() {
    auto lazy = LazyFiles::Materialize(tree_, temp_.path(), std::make_unique<FakeSource>(&files_));
    EXPECT_TRUE(lazy) << lazy.error().message();
    lazy_ = std::shared_ptr<LazyFiles>(std::move(*lazy));
    auto dir = HostDir::Open(temp_.path(), true);
    EXPECT_TRUE(dir) << dir.error().message();
    dir->AttachLazyFiles(lazy_);
    return std::move(*dir);
  }

  std::string Open(const HostDir& dir, const char* path, int flags = O_RDONLY) {
    auto fd = dir.OpenAt(path, flags, 0644);
    if (!fd) return "error: " + fd.error().message();
    return ReadAll(fd->get());
  }

  TestTempDir temp_{"flurry-lazy-files"};
  FileTree tree_;
  FakeFiles files_;
  std::string big_;
  std::shared_ptr<LazyFiles> lazy_;
};

TEST_F(LazyFilesTest, LaysTheTreeOutWithoutFetching) {
  HostDir dir = Root();
  const fs::path root = temp_.path();
  struct stat st {};
  ASSERT_EQ(stat((root / "data/big.bin").c_str(), &st), 0);
  EXPECT_EQ(static_cast<size_t>(st.st_size), big_.size());
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1'650'000'000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 7);
  ASSERT_EQ(stat((root / "data").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0750u);
  EXPECT_EQ(st.st_mtim.tv_nsec, 7);
  EXPECT_EQ(fs::read_symlink(root / "data/link"), "hello.txt");
  EXPECT_EQ(files_.reads, 0);
  EXPECT_EQ(lazy_->stats().placeholders, 4u);  // "empty" needs nothing
}

TEST_F(LazyFilesTest, TheFirstOpenFetchesTheBytesOnce) {
  HostDir dir = Root();
  EXPECT_EQ(Open(dir, "/data/hello.txt"), "hello, clone\n");
  EXPECT_EQ(files_.reads, 2);  // the bytes, then the end
  EXPECT_EQ(Open(dir, "/data/link"), "hello, clone\n");
  EXPECT_EQ(files_.reads, 2);
  EXPECT_EQ(Open(dir, "/data/big.bin"), big_);  // more than one chunk
  EXPECT_EQ(lazy_->stats().fetched_files, 2u);
  EXPECT_EQ(lazy_->stats().fetched_bytes, 13u + big_.size());
  // The fetched file keeps the parent's time, not the time of the fetch.
  struct stat st {};
  ASSERT_EQ(stat((fs::path(temp_.path()) / "data/big.bin").c_str(), &st), 0);
  EXPECT_EQ(st.st_mtim.tv_sec, 1'650'000'000);
}

TEST_F(LazyFilesTest, AReadOnlyFileIsFilledToo) {
  HostDir dir = Root();
  EXPECT_EQ(Open(dir, "/ro.txt"), "read only\n");
  struct stat st {};
  ASSERT_EQ(stat((fs::path(temp_.path()) / "ro.txt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0444u);
}

TEST_F(LazyFilesTest, TruncatingNeedsNoBytes) {
  HostDir dir = Root();
  EXPECT_EQ(Open(dir, "/data/hello.txt", O_RDWR | O_TRUNC), "");
  EXPECT_EQ(files_.reads, 0);
  EXPECT_EQ(Open(dir, "/data/hello.txt"), "");
}

TEST_F(LazyFilesTest, AppendingComesAfterTheParentsBytes) {
  HostDir dir = Root();
  {
    auto fd = dir.OpenAt("/data/hello.txt", O_WRONLY | O_APPEND, 0);
    ASSERT_TRUE(fd) << fd.error().message();
    ASSERT_EQ(write(fd->get(), "more\n", 5), 5);
  }
  EXPECT_EQ(Open(dir, "/data/hello.txt"), "hello, clone\nmore\n");
}

TEST_F(LazyFilesTest, AFileTheGuestReplacedIsNeverFilled) {
  HostDir dir = Root();
  ASSERT_TRUE(dir.Unlink({}, "/gone.txt", false));
  // A new file by the same name (and perhaps the same inode) is the guest's own.
  EXPECT_EQ(Open(dir, "/gone.txt", O_RDWR | O_CREAT), "");
  // Renaming one placeholder over another: the survivor is still filled, under its new name.
  ASSERT_TRUE(dir.Rename({}, "/ro.txt", {}, "/data/hello.txt", 0));
  EXPECT_EQ(Open(dir, "/data/hello.txt"), "read only\n");
  EXPECT_EQ(files_.reads, 2);
}

TEST_F(LazyFilesTest, FetchAllFillsWhatIsLeftWhereverItMoved) {
  HostDir dir = Root();
  ASSERT_TRUE(dir.Rename({}, "/data/hello.txt", {}, "/moved.txt", 0));
  ASSERT_TRUE(dir.FetchPendingFiles());
  EXPECT_FALSE(lazy_->has_pending());
  const int reads = files_.reads;
  EXPECT_EQ(Open(dir, "/moved.txt"), "hello, clone\n");
  EXPECT_EQ(Open(dir, "/data/big.bin"), big_);
  EXPECT_EQ(Open(dir, "/gone.txt"), "gone\n");
  EXPECT_EQ(files_.reads, reads);  // nothing more was fetched
}

TEST_F(LazyFilesTest, AFailedFetchIsAnIoErrorAndIsTriedAgain) {
  HostDir dir = Root();
  files_.fail = true;
  auto fd = dir.OpenAt("/data/hello.txt", O_RDONLY, 0);
  ASSERT_FALSE(fd);
  EXPECT_EQ(fd.error().code(), EIO);
  files_.fail = false;
  EXPECT_EQ(Open(dir, "/data/hello.txt"), "hello, clone\n");
}

// Two clones on one host sharing a cache: the bytes are fetched once.
TEST_F(LazyFilesTest, ClonesSharingAHostCacheFetchAFileOnce) {
  TestTempDir cache("flurry-lazy-cache");
  TestTempDir other_root("flurry-lazy-files2");
  ASSERT_FALSE(cache.path().empty());
  ASSERT_FALSE(other_root.path().empty());
  // A clone that died mid-fetch left a partial copy behind: it is not used.
  WriteFile(fs::path(cache.path()) / "2.part", "garbage");
  HostDir first = Root();
  lazy_->ShareFetchesThrough(cache.path());
  auto lazy2 =
      LazyFiles::Materialize(tree_, other_root.path(), std::make_unique<FakeSource>(&files_));
  ASSERT_TRUE(lazy2) << lazy2.error().message();
  std::shared_ptr<LazyFiles> second_lazy(std::move(*lazy2));
  second_lazy->ShareFetchesThrough(cache.path());
  auto second = HostDir::Open(other_root.path(), false);
  ASSERT_TRUE(second) << second.error().message();
  second->AttachLazyFiles(second_lazy);

  EXPECT_EQ(Open(first, "/data/big.bin"), big_);
  const int reads = files_.reads;
  EXPECT_GT(reads, 0);
  EXPECT_EQ(Open(*second, "/data/big.bin"), big_);
  EXPECT_EQ(files_.reads, reads);  // from the cache
  EXPECT_EQ(lazy_->stats().cached_files, 0u);
  EXPECT_EQ(second_lazy->stats().cached_files, 1u);
  EXPECT_EQ(second_lazy->stats().fetched_bytes, big_.size());
  EXPECT_EQ(ReadFile(fs::path(cache.path()) / "2"), big_);
}

TEST_F(LazyFilesTest, MaterializeRefusesAPathThatExists) {
  fs::create_directories(fs::path(temp_.path()) / "data");
  auto lazy = LazyFiles::Materialize(tree_, temp_.path(), std::make_unique<FakeSource>(&files_));
  EXPECT_FALSE(lazy);
}

}  // namespace
}  // namespace flurry
