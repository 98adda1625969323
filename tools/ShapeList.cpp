#include "tools/ShapeList.h"

#include <charconv>

#include "einjit/error.h"

namespace einjit::cli {

namespace {

int64_t parseDim(const std::string& text, const std::string& whole) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value < 0)
    throw UserError("bad dimension '" + text + "' in --shapes '" + whole +
                    "' (expected non-negative integers joined by 'x', shapes separated by ',')");
  return value;
}

}  // namespace

std::vector<Shape> parseShapeList(const std::string& text) {
  std::vector<Shape> shapes;
  std::size_t start = 0;
  while (true) {
    std::size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    Shape shape;
    if (!item.empty()) {
      std::size_t begin = 0;
      while (true) {
        std::size_t x = item.find('x', begin);
        shape.push_back(parseDim(item.substr(begin, x == std::string::npos ? std::string::npos : x - begin), text));
        if (x == std::string::npos) break;
        begin = x + 1;
      }
    }
    shapeNumel(shape);  // rejects shapes whose element count overflows
    shapes.push_back(shape);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return shapes;
}

}  // namespace einjit::cli
