# Turns a binary file into a C++ source holding its bytes: cmake -DINPUT=.. -DOUTPUT=.. -DNAME=..
file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" length)
math(EXPR bytes "${length} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n  " body "${body}")
file(WRITE "${OUTPUT}" "// Generated from ${INPUT} by embed.cmake. Do not edit.\n#include <cstddef>\n#include <cstdint>\nnamespace flurry {\nextern const uint8_t ${NAME}[] = {\n  ${body}\n};\nextern const size_t ${NAME}_size = ${bytes};\n}  // namespace flurry\n")
