// run_model: load a file written by `unetdsl build` and run one forward, no Python: a TorchScript
// file (MODEL.pt, torch::jit::load) or an AOTInductor package (MODEL.aoti.pt2, `--format aoti`:
// torch::inductor::AOTIModelPackageLoader, compiled kernels, no interpreter at all).
//
//   run_model MODEL.pt|MODEL.aoti.pt2 OUT.bin X.bin B,C,H[,W[,D]] [T.bin [Y.bin]] [--context C.bin TOKENS,DIM]
//             [--cond NAME N.bin WIDTH]... [--hint H.bin C,H[,W[,D]]] [--controlnet CN.pt|CN.aoti.pt2]
//             [--scale S] [--residuals R.bin C,H,W;C,H,W;...] [--cuda]
//
// X.bin: float32 little-endian, row-major, of the given shape (B, C, *spatial).
// T.bin: B float32 timesteps (the model casts them as its embedding needs). Y.bin: B int64 labels.
// C.bin: the context a text-conditioned model attends to, float32 (B, TOKENS, DIM).
// --cond: a named vector condition (the spec's `conditions`; SDXL's text_embeds and time_ids), float32
//   (B, WIDTH); give each the model declares.
// --hint: a ControlNet's hint image, float32 (B, C, *spatial). MODEL a ControlNet: OUT.bin receives its
//   residuals one after another, each shape on a line of stdout. --controlnet CN: the pair: CN runs on
//   the same inputs and the hint, its residuals (times --scale, default 1) go to the U-Net MODEL (an
//   AOTInductor U-Net exported with --residuals). --residuals: a U-Net's residuals read from a file
//   instead, float32, one after another as a ControlNet run writes them, each of the given shape
//   (without the batch; ';' between them). Otherwise OUT.bin receives the output as float32 and its
//   shape is printed on stdout.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

#include <array>
#include <cstdint>
#include <fstream>
#include <iostream>
#include <sstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <utility>
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

// The inputs as files: x (float32), then t (float32), y (int64), the context (float32) and the named
// conditions (float32) where given; a ControlNet's hint; a U-Net's residuals (from its ControlNet).
struct Inputs {
  torch::Tensor x, t, y, context, hint;
  std::vector<std::pair<std::string, torch::Tensor>> cond;  // in the order given
  std::vector<torch::Tensor> residuals;
  double scale = 1.0;
};

const torch::Tensor& cond_named(const Inputs& in, const std::string& name) {
  for (const auto& [n, v] : in.cond)
    if (n == name) return v;
  throw std::runtime_error("this model takes the condition '" + name + "': give --cond " + name + " FILE WIDTH");
}

// The condition names of a signature's "cond: {a: float32 (B, 16), b: ...}", in the model's order.
std::vector<std::string> cond_names(const std::string& signature) {
  std::vector<std::string> names;
  const auto start = signature.find("cond: {");
  if (start == std::string::npos) return names;
  const auto end = signature.find('}', start);
  std::stringstream ss(signature.substr(start + 7, end - start - 7));
  for (std::string item; std::getline(ss, item, ',');) {
    const auto first = item.find_first_not_of(' ');
    if (first != std::string::npos && item.find(':') != std::string::npos)
      names.push_back(item.substr(first, item.find(':') - first));
  }
  return names;
}

// A model's outputs: one tensor, or a ControlNet's residuals.
std::vector<torch::Tensor> outputs_of(const torch::jit::IValue& out) {
  if (out.isTensor()) return {out.toTensor()};
  return out.toTensorVector();
}

// The dtype unetdsl's metadata names (`unetdsl/dtype`: float32, float16 or bfloat16).
torch::ScalarType dtype_named(const std::string& name) {
  if (name == "float16") return torch::kFloat16;
  if (name == "bfloat16") return torch::kBFloat16;
  if (name == "float32") return torch::kFloat32;
  throw std::runtime_error("unknown unetdsl/dtype '" + name + "' (float32, float16 or bfloat16)");
}

// A TorchScript module: forward(x, t=None, y=None, context=None, cond=None[, hint | residuals]), any t
// dtype (the model casts it); a ControlNet's also takes `scale`.
std::vector<torch::Tensor> run_torchscript(const std::string& path, const Inputs& in, const torch::Device& device) {
  // The file's own dtype, from the extra file unetdsl writes: a frozen module has no parameters to
  // ask (its weights are constants of the graph, or packed for oneDNN when it loads on the CPU).
  torch::jit::ExtraFilesMap extra{{"unetdsl/dtype", ""}, {"unetdsl/forward", ""}, {"unetdsl/inputs", ""}};
  torch::jit::script::Module model = torch::jit::load(path, device, extra);
  model.eval();
  const auto params = model.parameters();
  const auto dtype = !extra["unetdsl/dtype"].empty() ? dtype_named(extra["unetdsl/dtype"])
                     : params.size() > 0            ? (*params.begin()).scalar_type()
                                                    : torch::kFloat32;
  const bool controlnet = extra["unetdsl/forward"].find("hint") != std::string::npos;
  std::vector<torch::jit::IValue> inputs;
  inputs.emplace_back(in.x.to(device, dtype));
  inputs.emplace_back(in.t.defined() ? torch::jit::IValue(in.t.to(device)) : torch::jit::IValue());
  inputs.emplace_back(in.y.defined() ? torch::jit::IValue(in.y.to(device)) : torch::jit::IValue());
  inputs.emplace_back(in.context.defined() ? torch::jit::IValue(in.context.to(device, dtype)) : torch::jit::IValue());
  if (!in.cond.empty()) {  // Dict[str, Tensor]: the model checks the names and widths itself
    c10::Dict<std::string, torch::Tensor> cond;
    for (const auto& [name, value] : in.cond) cond.insert(name, value.to(device, dtype));
    inputs.emplace_back(cond);
  } else {
    inputs.emplace_back(torch::jit::IValue());
  }
  if (controlnet) {
    inputs.emplace_back(in.hint.defined() ? torch::jit::IValue(in.hint.to(device, dtype)) : torch::jit::IValue());
    inputs.emplace_back(in.scale);
  } else if (!in.residuals.empty()) {
    std::vector<torch::Tensor> residuals;
    for (const auto& r : in.residuals) residuals.push_back(r.to(device, dtype));
    inputs.emplace_back(residuals);
  } else if (in.hint.defined()) {
    throw std::runtime_error("--hint is a ControlNet's input; this model is not one (" + extra["unetdsl/forward"] + ")");
  }
  return outputs_of(model.forward(inputs));
}

// An AOTInductor package: exactly the tensors its forward was exported with, each in the dtype the
// package's unetdsl metadata names (the same strings `unetdsl inspect` prints).
std::vector<torch::Tensor> run_aoti(const std::string& path, const Inputs& in, const torch::Device& device) {
  torch::inductor::AOTIModelPackageLoader loader(path);
  auto meta = loader.get_metadata();
  const std::string signature = meta["unetdsl/inputs"];
  const auto dtype = dtype_named(meta["unetdsl/dtype"]);
  const auto takes = [&](const std::string& name) { return signature.find("; " + name + ": ") != std::string::npos; };
  const auto refuse = [&]() { throw std::runtime_error("this package's inputs are: " + signature); };
  std::vector<torch::Tensor> inputs{in.x.to(device, dtype)};
  if (takes("t") != in.t.defined()) refuse();
  // sinusoidal and learned embeddings take int64 timesteps, fourier ones float32 noise levels
  // ("; t: float32" exactly: "context: float32" ends in "t: float32" too)
  if (takes("t")) inputs.push_back(in.t.to(device, signature.find("; t: float32") != std::string::npos ? torch::kFloat32
                                                                                                      : torch::kInt64));
  if (takes("y") != in.y.defined()) refuse();
  if (in.y.defined()) inputs.push_back(in.y.to(device));
  if (takes("context") != in.context.defined()) refuse();
  if (in.context.defined()) inputs.push_back(in.context.to(device, dtype));
  const auto names = cond_names(signature);  // the package's order, whatever the order given
  if (names.size() != in.cond.size()) refuse();
  for (const auto& name : names) inputs.push_back(cond_named(in, name).to(device, dtype));
  if (takes("hint") != in.hint.defined()) refuse();
  if (in.hint.defined()) inputs.push_back(in.hint.to(device, dtype));
  if (takes("residuals") != !in.residuals.empty()) refuse();
  for (const auto& r : in.residuals) inputs.push_back(r.to(device, dtype));
  auto out = loader.run(inputs);
  if (takes("hint") && in.scale != 1.0)  // exported at scale 1: the residuals are linear in it
    for (auto& r : out) r = r * in.scale;
  return out;
}

std::vector<torch::Tensor> run(const std::string& path, const Inputs& in, const torch::Device& device) {
  return ends_with(path, ".pt2") ? run_aoti(path, in, device) : run_torchscript(path, in, device);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  bool cuda = false;
  std::string context_path, context_shape, hint_path, hint_shape, controlnet, residuals_path, residuals_shapes;
  std::vector<std::array<std::string, 3>> conds;  // name, file, width
  double scale = 1.0;
  bool bad = false;
  for (auto it = args.begin(); it != args.end() && !bad;) {
    const auto left = std::distance(it, args.end());
    if (*it == "--cuda") {
      cuda = true;
      it = args.erase(it);
    } else if (*it == "--context" || *it == "--hint") {
      if (left < 3) { bad = true; break; }
      (*it == "--context" ? context_path : hint_path) = *(it + 1);
      (*it == "--context" ? context_shape : hint_shape) = *(it + 2);
      it = args.erase(it, it + 3);
    } else if (*it == "--residuals") {
      if (left < 3) { bad = true; break; }
      residuals_path = *(it + 1);
      residuals_shapes = *(it + 2);
      it = args.erase(it, it + 3);
    } else if (*it == "--cond") {
      if (left < 4) { bad = true; break; }
      conds.push_back({*(it + 1), *(it + 2), *(it + 3)});
      it = args.erase(it, it + 4);
    } else if (*it == "--controlnet" || *it == "--scale") {
      if (left < 2) { bad = true; break; }
      if (*it == "--controlnet") controlnet = *(it + 1); else scale = std::stod(*(it + 1));
      it = args.erase(it, it + 2);
    } else {
      ++it;
    }
  }
  if (bad || args.size() < 4 || args.size() > 6) {
    std::cerr << "usage: run_model MODEL.pt|MODEL.aoti.pt2 OUT.bin X.bin B,C,H[,W[,D]] [T.bin [Y.bin]] [--context C.bin TOKENS,DIM]"
                 " [--cond NAME N.bin WIDTH]... [--hint H.bin C,H[,W[,D]]] [--controlnet CN.pt|CN.aoti.pt2] [--scale S]"
                 " [--residuals R.bin C,H,W;...] [--cuda]\n";
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
    for (const auto& [name, path, width] : conds)  // (B, WIDTH)
      in.cond.emplace_back(name, read_raw(path, {shape[0], std::stoll(width)}, torch::kFloat32));
    if (!hint_path.empty()) {  // (B, C, *spatial)
      auto hs = parse_list(hint_shape);
      hs.insert(hs.begin(), shape[0]);
      in.hint = read_raw(hint_path, hs, torch::kFloat32);
    }
    in.scale = scale;
    if (!residuals_path.empty()) {  // back to back in one file, each (B, *shape)
      if (!controlnet.empty()) throw std::runtime_error("give --residuals or --controlnet, not both");
      std::ifstream file(residuals_path, std::ios::binary);
      if (!file) throw std::runtime_error("cannot open " + residuals_path);
      std::stringstream shapes(residuals_shapes);
      for (std::string one; std::getline(shapes, one, ';');) {
        auto rs = parse_list(one);
        rs.insert(rs.begin(), shape[0]);
        auto r = torch::empty(rs, torch::TensorOptions().dtype(torch::kFloat32));
        const auto bytes = static_cast<std::streamsize>(r.numel() * r.element_size());
        file.read(static_cast<char*>(r.data_ptr()), bytes);
        if (file.gcount() != bytes) throw std::runtime_error(residuals_path + ": too short for the residuals' shapes");
        in.residuals.push_back(r);
      }
      if (file.peek() != std::char_traits<char>::eof())
        throw std::runtime_error(residuals_path + ": longer than the residuals' shapes say");
    }
    torch::NoGradGuard no_grad;
    if (!controlnet.empty()) {  // the pair: the ControlNet's residuals into the U-Net
      if (!in.hint.defined()) throw std::runtime_error("--controlnet needs the hint: --hint H.bin C,H[,W[,D]]");
      in.residuals = run(controlnet, in, device);
      in.hint = torch::Tensor();
    }
    const auto outs = run(args[0], in, device);
    std::ofstream file(args[1], std::ios::binary);
    for (const auto& result : outs) {  // one output, or a ControlNet's residuals one after another
      auto out = result.to(torch::kCPU, torch::kFloat32).contiguous();
      file.write(static_cast<const char*>(out.data_ptr()), static_cast<std::streamsize>(out.numel() * sizeof(float)));
      for (int64_t i = 0; i < out.dim(); ++i) std::cout << (i ? "," : "") << out.size(i);
      std::cout << "\n";
    }
    if (!file) throw std::runtime_error("cannot write " + args[1]);
  } catch (const std::exception& e) {
    std::cerr << "run_model: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
