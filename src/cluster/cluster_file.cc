#include "cluster/cluster_file.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <charconv>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <vector>

#include "base/file_io.h"
#include "base/parse.h"
#include "cluster/quote.h"

namespace flurry {
namespace {

using Json = nlohmann::json;
using cluster_internal::Quote;

constexpr size_t kMaxMemberNameLength = 63;
constexpr std::string_view kReservedMemberName = "flurry-member";

// Refuses keys of `object` that are not in `allowed`: a misspelt key must not pass silently.
Result<void> CheckKeys(const Json& object, std::initializer_list<std::string_view> allowed) {
  for (const auto& [key, value] : object.items()) {
    bool known = false;
    for (std::string_view name : allowed) known = known || key == name;
    if (!known) return Fail("unknown key {}", Quote(key));
  }
  return {};
}

Result<std::string> RequiredString(const Json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end()) return Fail("{} is missing", key);
  if (!it->is_string()) return Fail("{} must be a string", key);
  return it->get<std::string>();
}

// "IPv4:PORT" with a port 1..65535 written without leading zeros. The textual form is then
// canonical, so comparing strings finds duplicate addresses.
Result<void> CheckAddress(std::string_view address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string_view::npos) {
    return Fail("address {} must be IPv4:PORT", Quote(address));
  }
  const std::string ip(address.substr(0, colon));
  const std::string_view port = address.substr(colon + 1);
  in_addr parsed{};
  if (inet_pton(AF_INET, ip.c_str(), &parsed) != 1) {
    return Fail("address {}: {} is not an IPv4 address (a.b.c.d)", Quote(address), Quote(ip));
  }
  if (parsed.s_addr == htonl(INADDR_ANY)) {
    return Fail("address {}: 0.0.0.0 cannot be connected to", Quote(address));
  }
  uint32_t value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || port.size() > 5 || port[0] == '0' || ec != std::errc() ||
      end != port.data() + port.size() || value > 65535) {
    return Fail("address {}: the port must be 1..65535", Quote(address));
  }
  return {};
}

// "host 2" or, when its name is a short string, "host 2 (\"host2\")". Hosts count from 1.
std::string HostLabel(size_t index, const Json& host) {
  if (host.is_object()) {
    auto it = host.find("name");
    if (it != host.end() && it->is_string() && it->get_ref<const std::string&>().size() <= 64) {
      return fmt::format("host {} ({})", index + 1, Quote(it->get_ref<const std::string&>()));
    }
  }
  return fmt::format("host {}", index + 1);
}

Result<ClusterHost> ParseHost(const Json& json) {
  if (!json.is_object()) return Fail("must be an object");
  FLURRY_TRY(CheckKeys(json, {"name", "address", "slots", "memory"}));
  ClusterHost host;
  host.name = FLURRY_TRY(RequiredString(json, "name"));
  FLURRY_TRY_CTX(ValidateMemberName(host.name), "name");
  host.address = FLURRY_TRY(RequiredString(json, "address"));
  FLURRY_TRY(CheckAddress(host.address));
  if (auto it = json.find("slots"); it != json.end()) {
    const bool in_range = it->is_number_integer() && it->get<int64_t>() >= 1 &&
                          it->get<int64_t>() <= kMaxHostSlots &&
                          (!it->is_number_unsigned() || it->get<uint64_t>() <= kMaxHostSlots);
    if (!in_range) return Fail("slots must be 1..{}", kMaxHostSlots);
    host.slots = static_cast<int32_t>(it->get<int64_t>());
  }
  if (auto it = json.find("memory"); it != json.end()) {
    if (it->is_number_unsigned()) {
      host.memory_bytes = it->get<uint64_t>();
    } else if (it->is_string()) {
      auto bytes = ParseSize(it->get<std::string>());
      if (!bytes) return Fail("memory: {}", bytes.error().message());
      host.memory_bytes = *bytes;
    } else {
      return Fail("memory must be a non-negative integer (bytes) or a size string like \"4G\"");
    }
  }
  return host;
}

// Parses JSON, refusing a key that appears twice in one object (nlohmann keeps the last one).
Result<Json> ParseJson(std::string_view text) {
  std::vector<std::set<std::string>> keys;  // one set per open object
  std::optional<std::string> duplicate;
  auto callback = [&](int, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::object_start) {
      keys.emplace_back();
    } else if (event == Json::parse_event_t::object_end) {
      if (!keys.empty()) keys.pop_back();
    } else if (event == Json::parse_event_t::key && !keys.empty()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(key).second && !duplicate) duplicate = key;
    }
    return true;
  };
  try {
    Json json = Json::parse(text.begin(), text.end(), callback);
    if (duplicate) return Fail("key {} appears twice in one object", Quote(*duplicate));
    return json;
  } catch (const Json::exception& e) {
    // "[json.exception.parse_error.101] parse error at line 1, ...": drop the bracketed id.
    std::string_view what = e.what();
    if (const size_t end = what.find("] "); what.starts_with("[json") && end != what.npos) {
      what.remove_prefix(end + 2);
    }
    return Fail("not valid JSON: {}", what);
  }
}

// "PATH: reason" (from the file helpers) -> "cluster file PATH: reason".
std::unexpected<Error> WithFilePrefix(Error error) {
  return std::unexpected(Error(error.code(), "cluster file " + error.message()));
}

}  // namespace

const ClusterHost* ClusterFile::Find(std::string_view host_name) const {
  for (const ClusterHost& host : hosts) {
    if (host.name == host_name) return &host;
  }
  return nullptr;
}

Result<void> ValidateMemberName(std::string_view name) {
  if (name.empty()) return Fail("must not be empty");
  if (name.size() > kMaxMemberNameLength) {
    return Fail("{} is {} characters long; the limit is {}", Quote(name), name.size(),
                kMaxMemberNameLength);
  }
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
      return Fail("{}: only a-z, 0-9 and '-' are allowed (a DNS label)", Quote(name));
    }
  }
  if (name.front() == '-' || name.back() == '-') {
    return Fail("{} must not start or end with '-'", Quote(name));
  }
  if (name == kReservedMemberName) {
    return Fail("{} is reserved: every member certificate carries it", Quote(name));
  }
  return {};
}

Result<ClusterFile> ParseClusterFile(std::string_view text, const std::string& base_dir) {
  if (text.size() > kMaxClusterFileBytes) {
    return Fail("{} bytes exceeds the limit of {} bytes", text.size(), kMaxClusterFileBytes);
  }
  const Json json = FLURRY_TRY(ParseJson(text));
  if (!json.is_object()) return Fail("must be a JSON object");
  FLURRY_TRY(CheckKeys(json, {"format", "version", "name", "credentials", "hosts"}));

  auto format = json.find("format");
  if (format == json.end() || !format->is_string() || *format != kClusterFileFormat) {
    return Fail("format must be \"{}\"", kClusterFileFormat);
  }
  auto version = json.find("version");
  if (version == json.end() || !version->is_number_integer()) {
    return Fail("version must be an integer");
  }
  if (!version->is_number_unsigned() || version->get<uint64_t>() != kClusterFileVersion) {
    return Fail("version {} is not supported (this flurry reads version {})", version->dump(),
                kClusterFileVersion);
  }

  ClusterFile file;
  file.name = FLURRY_TRY(RequiredString(json, "name"));
  FLURRY_TRY_CTX(ValidateMemberName(file.name), "name");

  const std::string credentials = FLURRY_TRY(RequiredString(json, "credentials"));
  if (credentials.empty()) return Fail("credentials must not be empty");
  if (credentials.find('\0') != std::string::npos) return Fail("credentials contains a NUL");
  std::filesystem::path credentials_path(credentials);
  if (credentials_path.is_relative()) {
    std::error_code ec;
    const std::filesystem::path base = std::filesystem::absolute(base_dir, ec);
    if (ec) return FailErrno(ec.value(), fmt::format("resolving {}", Quote(base_dir)));
    credentials_path = base / credentials_path;
  }
  file.credentials_dir = credentials_path.lexically_normal().string();
  if (file.credentials_dir.size() > 1 && file.credentials_dir.ends_with('/')) {
    file.credentials_dir.pop_back();
  }

  auto hosts = json.find("hosts");
  if (hosts == json.end() || !hosts->is_array()) return Fail("hosts must be an array");
  if (hosts->empty()) return Fail("hosts must name at least one host");
  if (hosts->size() > kMaxClusterHosts) {
    return Fail("{} hosts exceeds the limit of {}", hosts->size(), kMaxClusterHosts);
  }
  std::set<std::string> names;
  std::set<std::string> addresses;
  for (size_t i = 0; i < hosts->size(); ++i) {
    const Json& entry = (*hosts)[i];
    ClusterHost host = FLURRY_TRY_CTX(ParseHost(entry), HostLabel(i, entry));
    if (!names.insert(host.name).second) {
      return Fail("{}: name {} is used by an earlier host", HostLabel(i, entry), Quote(host.name));
    }
    if (!addresses.insert(host.address).second) {
      return Fail("{}: address {} is used by an earlier host", HostLabel(i, entry),
                  Quote(host.address));
    }
    file.hosts.push_back(std::move(host));
  }
  return file;
}

std::string FormatClusterFile(const ClusterFile& file) {
  using Ordered = nlohmann::ordered_json;
  Ordered hosts = Ordered::array();
  for (const ClusterHost& host : file.hosts) {
    Ordered entry = {{"name", host.name}, {"address", host.address}, {"slots", host.slots}};
    if (host.memory_bytes != 0) entry["memory"] = host.memory_bytes;
    hosts.push_back(std::move(entry));
  }
  Ordered json = {{"format", kClusterFileFormat},
                  {"version", kClusterFileVersion},
                  {"name", file.name},
                  {"credentials", file.credentials_dir},
                  {"hosts", std::move(hosts)}};
  // `replace`: invalid UTF-8 in a string must not throw (the result then fails validation).
  return json.dump(2, ' ', false, Ordered::error_handler_t::replace) + "\n";
}

Result<ClusterFile> LoadClusterFile(const std::string& path) {
  auto text = ReadSmallFile(path, {.max_bytes = kMaxClusterFileBytes});
  if (!text) return WithFilePrefix(std::move(text.error()));  // "PATH: reason"
  return WithContext(ParseClusterFile(*text, DirectoryOf(path)),
                     fmt::format("cluster file {}", path));
}

Result<void> WriteClusterFile(const std::string& path, const ClusterFile& file) {
  const std::string context = fmt::format("cluster file {}", path);
  const std::string text = FormatClusterFile(file);
  // Never write a file that would not load.
  FLURRY_TRY_CTX(ParseClusterFile(text, DirectoryOf(path)), context);
  auto written = WriteFileAtomic(path, text, 0644, /*exclusive=*/false);
  if (!written) return WithFilePrefix(std::move(written.error()));
  return {};
}

}  // namespace flurry
