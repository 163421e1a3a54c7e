// run_model: load a file written by `unetdsl build` and run one forward, no Python: a TorchScript
// file (MODEL.pt, torch::jit::load) or an AOTInductor package (MODEL.aoti.pt2, `--format aoti`:
// torch::inductor::AOTIModelPackageLoader, compiled kernels, no interpreter at all).
//
//   run_model MODEL.pt|MODEL.aoti.pt2 OUT.bin X.bin B,C,H[,W[,D]] [T.bin [Y.bin]] [--context C.bin TOKENS,DIM] [--cuda]
//
// X.bin: float32 little-endian, row-major, of the given shape (B, C, *spatial).
// T.bin: B float32 timesteps (the model casts them as its embedding needs). Y.bin: B int64 labels.
// C.bin: the context a text-conditioned model attends to, float32 (B, TOKENS, DIM).
// OUT.bin receives the output as float32; its shape is printed on stdout.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
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

std::vector<int64_t> parse_list(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(std::stoll(item));
  return out;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The inputs as files: x (float32), then t (float32), y (int64) and the context (float32) where given.
struct Inputs {
  torch::Tensor x, t, y, context;
};

// The dtype unetdsl's metadata names (`unetdsl/dtype`: float32, float16 or bfloat16).
torch::ScalarType dtype_named(const std::string& name) {
  if (name == "float16") return torch::kFloat16;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float32") return torch::kFloat32;
  throw std::runtime_error("unknown unetdsl/dtype '" + name + "' (float32, float16 or bfloat16)");
}

// A TorchScript module: forward(x, t=None, y=None, context=None), any t dtype (the model casts it).
torch::Tensor run_torchscript(const std::string& path, const Inputs& in, const torch::Device& device) {
  // The file's own dtype, from the extra file unetdsl writes: a frozen module has no parameters to
  // ask (its weights are constants of the graph, or packed for oneDNN when it loads on the CPU).
  torch::jit::ExtraFilesMap extra{{"unetdsl/dtype", ""}};
  torch::jit::script::Module model = torch::jit::load(path, device, extra);
  model.eval();
  const auto params = model.parameters();
  const auto dtype = !extra["unetdsl/dtype"].empty() ? dtype_named(extra["unetdsl/dtype"])
                     : params.size() > 0            ? (*params.begin()).scalar_type()
                                                    : torch::kFloat32;
  std::vector<torch::jit::IValue> inputs;
  inputs.emplace_back(in.x.to(device, dtype));
  inputs.emplace_back(in.t.defined() ? torch::jit::IValue(in.t.to(device)) : torch::jit::IValue());
  inputs.emplace_back(in.y.defined() ? torch::jit::IValue(in.y.to(device)) : torch::jit::IValue());
  if (in.context.defined()) inputs.emplace_back(in.context.to(device, dtype));
  return model.forward(inputs).toTensor();
}

// An AOTInductor package: exactly the tensors its forward was exported with, each in the dtype the
// package's unetdsl metadata names (the same strings `unetdsl inspect` prints).
torch::Tensor run_aoti(const std::string& path, const Inputs& in, const torch::Device& device) {
  torch::inductor::AOTIModelPackageLoader loader(path);
  auto meta = loader.get_metadata();
  const std::string signature = meta["unetdsl/inputs"];
  const auto dtype = dtype_named(meta["unetdsl/dtype"]);
  std::vector<torch::Tensor> inputs{in.x.to(device, dtype)};
  const bool takes_t = signature.find("; t: ") != std::string::npos;
  if (takes_t != in.t.defined()) throw std::runtime_error("this package's inputs are: " + signature);
  // sinusoidal and learned embeddings take int64 timesteps, fourier ones float32 noise levels
  if (takes_t) inputs.push_back(in.t.to(device, signature.find("t: float32") != std::string::npos ? torch::kFloat32
                                                                                                : torch::kInt64));
  if ((signature.find("; y: ") != std::string::npos) != in.y.defined())
    throw std::runtime_error("this package's inputs are: " + signature);
  if (in.y.defined()) inputs.push_back(in.y.to(device));
  if ((signature.find("; context: ") != std::string::npos) != in.context.defined())
    throw std::runtime_error("this package's inputs are: " + signature);
  if (in.context.defined()) inputs.push_back(in.context.to(device, dtype));
  return loader.run(inputs)[0];
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
    std::cerr << "usage: run_model MODEL.pt|MODEL.aoti.pt2 OUT.bin X.bin B,C,H[,W[,D]] [T.bin [Y.bin]] [--context C.bin TOKENS,DIM]"
                 " [--cuda]\n";
    return 2;
  }
  try {
    const torch::Device device = cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
    const auto shape = parse_shape(args[3]);
    Inputs in;
    in.x = read_raw(args[2], shape, torch::kFloat32);
    if (args.size() > 4) in.t = read_raw(args[4], {shape[0]}, torch::kFloat32);
    if (args.size() > 5) in.y = read_raw(args[5], {shape[0]}, torch::kInt64);
    if (!context_path.empty()) {  // (B, TOKENS, DIM)
      const auto td = parse_list(context_shape);
      if (td.size() != 2) throw std::runtime_error("--context needs TOKENS,DIM: " + context_shape);
      in.context = read_raw(context_path, {shape[0], td[0], td[1]}, torch::kFloat32);
    }
    torch::NoGradGuard no_grad;
    const torch::Tensor result = ends_with(args[0], ".pt2") ? run_aoti(args[0], in, device)
                                                            : run_torchscript(args[0], in, device);
    auto out = result.to(torch::kCPU, torch::kFloat32).contiguous();
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
