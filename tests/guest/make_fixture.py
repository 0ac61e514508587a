#!/usr/bin/env python3
"""Makes the malformed-ELF fixtures for flurry's integration tests from a good static ELF.

usage: make_fixture.py KIND INPUT OUTPUT
  truncate    first 100 bytes of INPUT
  elf32       INPUT with EI_CLASS patched to ELFCLASS32 (the rest stays 64-bit)
  huge-memsz  the first PT_LOAD's p_memsz set to 16 TiB
  low-vaddr   every PT_LOAD (and the entry point) moved down so the first starts at address 0
  high-vaddr  every PT_LOAD (and the entry point) moved up to 1 TiB
"""
import os
import struct
import sys

PT_LOAD = 1


def program_headers(data):
    e_phoff, = struct.unpack_from("<Q", data, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(e_phnum):
        off = e_phoff + i * e_phentsize
        p_type, = struct.unpack_from("<I", data, off)
        yield off, p_type


def loads(data):
    return [off for off, p_type in program_headers(data) if p_type == PT_LOAD]


def move_segments(data, delta):
    for off in loads(data):
        p_vaddr, p_paddr = struct.unpack_from("<QQ", data, off + 0x10)
        struct.pack_into("<QQ", data, off + 0x10, p_vaddr + delta, p_paddr + delta)
    e_entry, = struct.unpack_from("<Q", data, 0x18)
    struct.pack_into("<Q", data, 0x18, e_entry + delta)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    kind, src, dst = sys.argv[1:]
    data = bytearray(open(src, "rb").read())
    if data[:4] != b"\x7fELF" or data[4] != 2:
        sys.exit(f"{src}: not a 64-bit ELF")
    if kind == "truncate":
        data = data[:100]
    elif kind == "elf32":
        data[4] = 1
    elif kind == "huge-memsz":
        off = loads(data)[0]
        struct.pack_into("<Q", data, off + 0x28, 1 << 44)
    elif kind == "low-vaddr":
        first = min(struct.unpack_from("<Q", data, off + 0x10)[0] for off in loads(data))
        move_segments(data, -first)
    elif kind == "high-vaddr":
        first = min(struct.unpack_from("<Q", data, off + 0x10)[0] for off in loads(data))
        move_segments(data, (1 << 40) - first)
    else:
        sys.exit(f"unknown kind {kind}")
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dst)


if __name__ == "__main__":
    main()
