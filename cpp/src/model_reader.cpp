// Model files, reading side: parse the safetensors container and the architecture in
// __metadata__["fastlstm"] (the format is specified in docs/model-format.md), validate it, and
// build the ModelSpec the runner (model.cpp) executes.
//
// Loading checks everything before it allocates by what the header claims: every tensor's
// shape against the architecture, every architecture size against the tensors, no tensor left
// unused.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <new>
#include <set>
#include <sstream>

#include "model_loader.hpp"

namespace fastlstm {
namespace detail {

std::vector<char> read_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw FileOpenError("cannot read model file '" + path + "': it is a directory");
  errno = 0;
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    const int err = errno;
    throw FileOpenError("cannot open model file '" + path + "': " +
                        (err ? std::strerror(err) : "unknown error"));
  }
  std::vector<char> bytes;
  char chunk[1 << 16];
  while (f.read(chunk, sizeof chunk) || f.gcount() > 0)
    bytes.insert(bytes.end(), chunk, chunk + f.gcount());
  if (f.bad()) throw FileOpenError("cannot read model file '" + path + "': read error");
  return bytes;
}

ModelSpec load_spec(std::vector<char> bytes, const std::string& path, bool graph_for_python) {
  const std::string where = "model file '" + path + "'";
  const detail::SafeTensors st = detail::SafeTensors::parse(std::move(bytes), where);
  ModelSpec spec;
  ModelSpec* impl = &spec;
  impl->path = path;
  Loader ld(st, where);

  const std::string* meta = st.metadata_value("fastlstm");
  if (!meta)
    throw HeaderError(where + " is not a fastlstm model file: its safetensors header has no "
                      "__metadata__[\"fastlstm\"] entry");
  detail::Json j;
  try {
    j = detail::Json::parse(*meta);
  } catch (const detail::JsonError& e) {
    throw HeaderError(where + ": __metadata__[\"fastlstm\"] is not valid JSON: " + e.what());
  }
  if (!j.is_object()) ld.header_fail("__metadata__[\"fastlstm\"] must be a JSON object");
  const detail::Json* fv = j.find("format_version");
  if (!fv) ld.header_fail("__metadata__[\"fastlstm\"] has no \"format_version\"");
  if (!fv->is_integer())
    throw FormatVersionError(where + ": format_version must be an integer, got " +
                             detail::Json::kind_name(fv->kind()));
  if (fv->as_int() < kOldestFormatVersion || fv->as_int() > kFormatVersion)
    throw FormatVersionError(
        where + " has format_version " + std::to_string(fv->as_int()) +
        "; this fastlstm reads format_version " + std::to_string(kOldestFormatVersion) +
        " to " + std::to_string(kFormatVersion) +
        (fv->as_int() > kFormatVersion ? " (the file was written by a newer fastlstm)" : ""));
  const int64_t version = fv->as_int();
  impl->format_version = version;
  ld.set_version(version);
  ld.only_keys(j, "__metadata__[\"fastlstm\"]", {"format_version", "model"});
  const detail::Json& m = ld.get_object(j, "model", "__metadata__[\"fastlstm\"]");
  const std::string cls = ld.get_string(m, "class", "model");
  impl->class_name = cls;
  if (cls == "LSTM" || cls == "GRU") {
    ld.bare_module(m, cls, *impl);
    impl->input_size = impl->layers[0].in_dim;
  } else if (cls == "Sequential") {
    ld.sequential(m, *impl);
  } else if (cls == "Model") {
    if (version < 2) ld.header_fail("model.class \"Model\" needs format_version 2 or later");
    if (graph_for_python) {
      ld.graph_model(m, *impl);
      impl->graph_json = *meta;
    } else {  // the C++ runner's graph (model_graph.cpp); the optimizer slots are checked below
      ld.only_keys(m, "model", {"class", "dtype", "inputs", "layers", "outputs", "output_names"});
      ld.check_dtype(m, "model", *impl);
      if (impl->precision != Precision::Float32)
        ld.header_fail("model.precision: a functional model is not stored quantized");
      read_graph(ld, m, *impl);
    }
    if (st.metadata_value("fastlstm_selfcheck"))
      ld.header_fail("a functional model has no self-check (__metadata__[\"fastlstm_selfcheck\"])");
    if (const std::string* cs = st.metadata_value("fastlstm_compile")) {
      ld.compile_state(*cs, version);
      impl->compile_json = *cs;
    }
    ld.check_all_used();
    return spec;
  } else {
    ld.header_fail("model.class must be \"LSTM\", \"GRU\", \"Sequential\" or \"Model\", got "
                   "\"" + cls + "\"");
  }
  for (Layer& L : impl->layers)
    if (L.kind == LayerKind::Recurrent) L.rnn.precision = impl->precision;
  impl->output_size = impl->layers.back().out_dim;
  impl->out_seq = impl->layers.back().out_seq;

  if (const std::string* cs = st.metadata_value("fastlstm_compile")) {
    ld.compile_state(*cs, version);  // before the self-check: slots belong to weights only
    impl->compile_json = *cs;
  }
  if (const std::string* sc = st.metadata_value("fastlstm_selfcheck"))
    ld.self_check_spec(*sc, *impl);
  ld.check_all_used();
  return spec;
}

}  // namespace detail

Model::Model(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

// verify at the file's own precision, then quantize (the workspaces made by the check hold
// engines of the old precision: dropped)
// A quantized file runs at its own precision: LoadOptions::precision Float32 (the default) or
// the file's precision; another one would quantize already quantized weights a second time and
// is refused.
Model Model::finish_load(std::shared_ptr<Impl> impl, const LoadOptions& o) {
  if (impl->precision != Precision::Float32 && o.precision != Precision::Float32 &&
      o.precision != impl->precision)
    throw ModelFileError("model file '" + impl->path + "' is quantized to " +
                         precision_name(impl->precision) + "; it cannot be loaded at precision " +
                         precision_name(o.precision) + " (load it with the default precision, "
                         "or quantize the float model to " + precision_name(o.precision) + ")");
  if (o.verify) impl->self_check();
  if (o.precision != Precision::Float32 && impl->precision == Precision::Float32) {
    for (detail::Layer& L : impl->layers)
      if (L.kind == detail::LayerKind::Recurrent) L.rnn.precision = o.precision;
    impl->pool.clear();
  }
  return Model(std::move(impl));
}

Model Model::load(const std::string& path, bool verify) {
  LoadOptions o;
  o.verify = verify;
  return load(path, o);
}

Model Model::load(const std::string& path, const LoadOptions& options) {
  return finish_load(std::make_shared<Impl>(detail::load_spec(detail::read_file(path), path)),
                     options);
}

Model Model::load_from_memory(const void* data, size_t size, bool verify,
                              const std::string& name) {
  LoadOptions o;
  o.verify = verify;
  return load_from_memory(data, size, o, name);
}

Model Model::load_from_memory(const void* data, size_t size, const LoadOptions& options,
                              const std::string& name) {
  if (!data && size) throw Error("load_from_memory: data is null");
  const char* p = static_cast<const char*>(data);
  return finish_load(
      std::make_shared<Impl>(detail::load_spec(std::vector<char>(p, p + size), name)), options);
}

}  // namespace fastlstm
