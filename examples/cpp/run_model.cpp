// run_model: load a TorchScript file written by `unetdsl build` and run one forward, no Python.
//
//   run_model MODEL.pt OUT.bin X.bin B,C,H[,W[,D]] [T.bin [Y.bin]] [--context C.bin TOKENS,DIM] [--cuda]
//
// X.bin: float32 little-endian, row-major, of the given shape (B, C, *spatial).
// T.bin: B float32 timesteps (the model casts them as its embedding needs). Y.bin: B int64 labels.
// C.bin: the context a text-conditioned model attends to, float32 (B, TOKENS, DIM).
// OUT.bin receives the output as float32; its shape is printed on stdout.
#include <torch/script.h>

#include <cstdint>
#include <fstream>
#include <iostream>
#include <sstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

std::vector<int64_t> parse_shape(const std::string& text) {
  std::vector<int64_t> shape;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) shape.push_back(std::stoll(item));
  if (shape.size() < 3) throw std::runtime_error("shape needs B, C and at least one spatial size: " + text);
  return shape;
}

torch::Tensor read_raw(const std::string& path, std::vector<int64_t> shape, torch::ScalarType dtype) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  auto tensor = torch::empty(shape, torch::TensorOptions().dtype(dtype));
  const auto bytes = static_cast<std::streamsize>(tensor.numel() * tensor.element_size());
  in.read(static_cast<char*>(tensor.data_ptr()), bytes);
  if (in.gcount() != bytes) throw std::runtime_error(path + ": too short for shape");
  return tensor;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  bool cuda = false;
  std::string context_path, context_shape;
  bool bad = false;
  for (auto it = args.begin(); it != args.end();) {
    if (*it == "--cuda") {
      cuda = true;
      it = args.erase(it);
    } else if (*it == "--context") {
      if (std::distance(it, args.end()) < 3) { bad = true; break; }
      context_path = *(it + 1);
      context_shape = *(it + 2);
      it = args.erase(it, it + 3);
    } else {
      ++it;
    }
  }
  if (bad || args.size() < 4 || args.size() > 6) {
    std::cerr << "usage: run_model MODEL.pt OUT.bin X.bin B,C,H[,W[,D]] [T.bin [Y.bin]] [--context C.bin TOKENS,DIM]"
                 " [--cuda]\n";
    return 2;
  }
  try {
    const torch::Device device = cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
    torch::jit::script::Module model = torch::jit::load(args[0], device);
    model.eval();
    const auto shape = parse_shape(args[3]);
    std::vector<torch::jit::IValue> inputs;
    // The model's dtype is that of its first parameter (float32, float16 or bfloat16).
    const auto dtype = (*model.parameters().begin()).scalar_type();
    inputs.emplace_back(read_raw(args[2], shape, torch::kFloat32).to(device, dtype));
    inputs.emplace_back(args.size() > 4 ? torch::jit::IValue(read_raw(args[4], {shape[0]}, torch::kFloat32).to(device))
                                        : torch::jit::IValue());
    inputs.emplace_back(args.size() > 5 ? torch::jit::IValue(read_raw(args[5], {shape[0]}, torch::kInt64).to(device))
                                        : torch::jit::IValue());
    if (!context_path.empty()) {  // forward(x, t, y, context): (B, TOKENS, DIM) in the model's dtype
      std::vector<int64_t> td;
      std::stringstream ss(context_shape);
      for (std::string item; std::getline(ss, item, ',');) td.push_back(std::stoll(item));
      if (td.size() != 2) throw std::runtime_error("--context needs TOKENS,DIM: " + context_shape);
      inputs.emplace_back(read_raw(context_path, {shape[0], td[0], td[1]}, torch::kFloat32).to(device, dtype));
    }
    torch::NoGradGuard no_grad;
    auto out = model.forward(inputs).toTensor().to(torch::kCPU, torch::kFloat32).contiguous();
    std::ofstream file(args[1], std::ios::binary);
    file.write(static_cast<const char*>(out.data_ptr()), static_cast<std::streamsize>(out.numel() * sizeof(float)));
    if (!file) throw std::runtime_error("cannot write " + args[1]);
    for (int64_t i = 0; i < out.dim(); ++i) std::cout << (i ? "," : "") << out.size(i);
    std::cout << "\n";
  } catch (const std::exception& e) {
    std::cerr << "run_model: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
