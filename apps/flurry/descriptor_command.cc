#include "descriptor_command.h"

#include <cstdio>

#include "snapshot/descriptor_codec.h"
#include "snapshot/descriptor_text.h"

namespace flurry {

CLI::App* AddDescriptorCommand(CLI::App& app, std::string& file) {
  CLI::App* descriptor = app.add_subcommand("descriptor", "Inspect VM descriptor files");
  descriptor->require_subcommand(1);
  CLI::App* show = descriptor->add_subcommand(
      "show", "Validate a VM descriptor file and print it in human-readable form");
  show->add_option("file", file, "Descriptor file (docs/formats/descriptor.md)")->required();
  show->footer("Exit status: 0 when the descriptor is valid; 1 when it is refused.");
  return show;
}

int RunDescriptorShow(const std::string& file) {
  auto bytes = ReadDescriptorBytes(file);
  Result<VmDescriptor> descriptor =
      bytes ? DecodeDescriptor(*bytes) : std::unexpected(std::move(bytes.error()));
  if (!descriptor) {
    std::fprintf(stderr, "flurry: %s: %s\n", file.c_str(), descriptor.error().message().c_str());
    return 1;
  }
  const std::string text = DescribeDescriptor(*descriptor, bytes->size());
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

}  // namespace flurry
