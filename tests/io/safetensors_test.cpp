// safetensors: round trip, and hostile files refused with a message, never a crash.
#include "attnkit/safetensors.hpp"

#include <gtest/gtest.h>

#include <cstring>

#include "attnkit/error.hpp"

namespace attnkit {
namespace {

SafeTensorsFile sample() {
  SafeTensorsFile f;
  f.tensors["b"] = {{2, 3}, {1, 2, 3, 4, 5, 6}};
  f.tensors["a"] = {{1}, {-0.5f}};
  f.tensors["empty"] = {{0, 4}, {}};
  f.metadata.emplace("k", std::string(1, 'v'));
  return f;
}

std::string with_header(const std::string& json, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  return out + json + data;
}

std::string error_of(const std::string& bytes) {
  try {
    parse_safetensors(bytes, "f.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(SafeTensors, RoundTripIsExact) {
  const std::string bytes = safetensors_bytes(sample());
  uint64_t header = 0;
  std::memcpy(&header, bytes.data(), 8);
  EXPECT_EQ((8 + header) % 8, 0u);  // data aligned
  const SafeTensorsFile back = parse_safetensors(bytes, "x");
  EXPECT_EQ(back.tensors.at("b").data, sample().tensors.at("b").data);
  EXPECT_EQ(back.tensors.at("b").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(back.tensors.at("a").data, std::vector<float>{-0.5f});
  EXPECT_TRUE(back.tensors.at("empty").data.empty());
  EXPECT_EQ(back.metadata.at("k"), "v");
  EXPECT_EQ(safetensors_bytes(back), bytes);
}

TEST(SafeTensors, HostileFilesAreErrors) {
  const std::string good = safetensors_bytes(sample());
  for (size_t cut : {size_t{0}, size_t{4}, size_t{8}, size_t{20}, good.size() - 1})
    EXPECT_NE(error_of(good.substr(0, cut)).find("f.safetensors"), std::string::npos) << cut;
  std::string huge = good;
  const uint64_t big = ~uint64_t{0};
  std::memcpy(huge.data(), &big, 8);
  EXPECT_NE(error_of(huge).find("header length"), std::string::npos);
  const std::string four(4 * sizeof(float), '\0');
  EXPECT_NE(error_of(with_header(R"({"t":{"dtype":"F16","shape":[4],"data_offsets":[0,16]}})", four)).find("F32"),
            std::string::npos);
  EXPECT_NE(error_of(with_header(R"({"t":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}})", four)).find("data_offsets"),
            std::string::npos);
  EXPECT_NE(error_of(with_header(R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,99]}})", four)).find("data_offsets"),
            std::string::npos);
  EXPECT_NE(error_of(with_header(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}})",
                                 four))
                .find("too large"),
            std::string::npos);
  EXPECT_NE(error_of(with_header(R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                                 R"("u":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                                 four))
                .find("overlap"),
            std::string::npos);
  EXPECT_NE(error_of(with_header(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", four)).find("after the last"),
            std::string::npos);
  EXPECT_NE(error_of(with_header("[1,2]", "")).find("object"), std::string::npos);
  EXPECT_NE(error_of(with_header("{\"t\":", "")).find("JSON"), std::string::npos);
  EXPECT_NE(error_of(with_header(R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", "")).find("shape"),
            std::string::npos);
}

}  // namespace
}  // namespace attnkit
