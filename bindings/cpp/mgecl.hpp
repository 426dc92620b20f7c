// mgecl — header-only C++17 wrapper over the C API (include/mgecl.h).
//
// RAII handles: mgecl::Model (copyable, shares one model; may be used by many threads at once)
// and mgecl::Task (move-only; one thread at a time). Every failure throws mgecl::Error, which
// carries the C status code and the library's message.
//
//   mgecl::Model model = mgecl::Model::load("model.safetensors");
//   mgecl::Task task(model);
//   task.add_class("cat");
//   task.add_example("cat", mgecl::Image::file("cat1.png"));
//   ...
//   task.fit();
//   mgecl::Prediction p = task.classify(mgecl::Image::file("query.png"));
//
// Link as for C: -lmgecl (see docs/c-abi.md).
#ifndef MGECL_HPP
#define MGECL_HPP

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mgecl.h"

namespace mgecl {

/// A failed call: the C status code and the library's message.
class Error : public std::runtime_error {
  public:
    Error(mgecl_status status, const std::string &message)
        : std::runtime_error(std::string(mgecl_status_name(status)) + ": " + message),
          status_(status) {}
    /// The C status code (never MGECL_STATUS_OK).
    mgecl_status status() const noexcept { return status_; }

  private:
    mgecl_status status_;
};

namespace detail {
inline void check(mgecl_status status) {
    if (status != MGECL_STATUS_OK) throw Error(status, mgecl_last_error_message());
}
struct ModelFree {
    void operator()(mgecl_model *m) const noexcept { mgecl_model_free(m); }
};
struct TaskFree {
    void operator()(mgecl_task *t) const noexcept { mgecl_task_free(t); }
};
}  // namespace detail

/// The library's version ("0.2.0").
inline std::string version() { return mgecl_version(); }

/// One image: a file, encoded bytes or raw pixels. Owns the path; borrows bytes and pixels,
/// which must outlive the calls the image is passed to.
class Image {
  public:
    static Image file(std::string path) {
        Image image;
        image.path_ = std::move(path);
        image.kind_ = MGECL_IMAGE_KIND_FILE;
        return image;
    }
    static Image encoded(const void *data, std::size_t len) {
        Image image;
        image.raw_ = mgecl_image_encoded(static_cast<const uint8_t *>(data), len);
        image.kind_ = MGECL_IMAGE_KIND_ENCODED;
        return image;
    }
    static Image pixels(const void *data, std::size_t len, uint32_t width, uint32_t height,
                        std::size_t stride, mgecl_pixel_format format) {
        Image image;
        image.raw_ = mgecl_image_pixels(static_cast<const uint8_t *>(data), len, width, height,
                                        stride, static_cast<uint32_t>(format));
        image.kind_ = MGECL_IMAGE_KIND_PIXELS;
        return image;
    }
    /// The C view (valid while this Image lives and is not modified).
    mgecl_image raw() const {
        return kind_ == MGECL_IMAGE_KIND_FILE ? mgecl_image_file(path_.c_str()) : raw_;
    }

  private:
    Image() : raw_(mgecl_image_file(nullptr)), kind_(MGECL_IMAGE_KIND_FILE) {}
    std::string path_;
    mgecl_image raw_;
    mgecl_image_kind kind_;
};

/// What a model is.
struct ModelInfo {
    std::string arch, device, fingerprint;
    std::size_t feature_dim, in_channels, image_height, image_width;
    bool invert;
};

/// A loaded encoder. Copies share one model; thread-safe.
class Model {
  public:
    /// Loads a model file; `device` "cpu", "cuda[:N]", "metal[:N]" or "auto"; `metadata`
    /// supplies or overrides `__metadata__` entries.
    static Model load(const std::string &path, const std::string &device = "cpu",
                      const std::map<std::string, std::string> &metadata = {}) {
        return open([&](const mgecl_load_options *o, mgecl_model **out) {
            return mgecl_model_load(path.c_str(), o, out);
        }, device, metadata);
    }
    /// Loads a model from the bytes of a safetensors file.
    static Model load_bytes(const void *data, std::size_t len, const std::string &device = "cpu",
                            const std::map<std::string, std::string> &metadata = {}) {
        return open([&](const mgecl_load_options *o, mgecl_model **out) {
            return mgecl_model_load_bytes(static_cast<const uint8_t *>(data), len, o, out);
        }, device, metadata);
    }

    ModelInfo info() const {
        mgecl_model_info i{};
        i.struct_size = sizeof i;
        detail::check(mgecl_model_describe(get(), &i));
        return {i.arch,        i.device,      i.fingerprint,  i.feature_dim,
                i.in_channels, i.image_height, i.image_width, i.invert};
    }
    /// The full description as JSON.
    std::string info_json() const {
        std::size_t needed = 0;
        mgecl_status s = mgecl_model_info_json(get(), nullptr, 0, &needed);
        if (s != MGECL_STATUS_BUFFER_TOO_SMALL) detail::check(s);
        std::string text(needed, '\0');
        detail::check(mgecl_model_info_json(get(), text.data(), text.size(), nullptr));
        text.resize(needed - 1);
        return text;
    }
    std::size_t feature_dim() const { return info().feature_dim; }
    /// The task settings this model recommends (its task_defaults metadata over the defaults).
    mgecl_task_options task_options() const {
        mgecl_task_options options{};
        options.struct_size = sizeof options;
        detail::check(mgecl_model_task_options(get(), &options));
        return options;
    }
    /// Features of the images: images.size() rows of feature_dim() floats, row-major.
    std::vector<float> embed(const std::vector<Image> &images) const {
        std::vector<mgecl_image> raw;
        for (const Image &image : images) raw.push_back(image.raw());
        std::vector<float> out(images.size() * feature_dim());
        detail::check(mgecl_model_embed(get(), raw.data(), raw.size(), out.data(), out.size(),
                                        nullptr));
        return out;
    }
    const mgecl_model *get() const noexcept { return handle_.get(); }

  private:
    template <typename F>
    static Model open(F loader, const std::string &device,
                      const std::map<std::string, std::string> &metadata) {
        std::vector<mgecl_metadata_entry> entries;
        for (const auto &kv : metadata) entries.push_back({kv.first.c_str(), kv.second.c_str()});
        mgecl_load_options options;
        detail::check(mgecl_load_options_init(&options, sizeof options));
        options.device = device.c_str();
        options.metadata = entries.data();
        options.metadata_len = entries.size();
        mgecl_model *raw = nullptr;
        detail::check(loader(&options, &raw));
        Model model;
        model.handle_.reset(raw, detail::ModelFree());
        return model;
    }
    Model() = default;
    std::shared_ptr<mgecl_model> handle_;
};

/// The answer for one image; `label` is empty when rejected as unknown (threshold).
/// `probability`: of the best class, given the image is of one of the task's classes;
/// `known_probability`: that it is of one of them at all (what the threshold compares).
struct Prediction {
    std::optional<std::string> label;
    std::size_t class_index;
    double probability;
    double known_probability;
};

/// Task settings (start from Model::task_options(), or default_options() for the
/// model-independent ones).
using TaskOptions = mgecl_task_options;
inline TaskOptions default_options() {
    TaskOptions options;
    detail::check(mgecl_task_options_init(&options, sizeof options));
    return options;
}
using FitReport = mgecl_fit_report;

/// A few-shot task bound to a model. Move-only; use from one thread at a time.
class Task {
  public:
    /// A task with the model's recommended settings (Model::task_options()).
    explicit Task(const Model &model) : Task(model, model.task_options()) {}
    Task(const Model &model, const TaskOptions &options) {
        mgecl_task *raw = nullptr;
        detail::check(mgecl_task_new(model.get(), &options, &raw));
        handle_.reset(raw);
    }
    /// Loads a task saved with save() against `model`.
    static Task load(const std::string &path, const Model &model) {
        mgecl_task *raw = nullptr;
        detail::check(mgecl_task_load(path.c_str(), model.get(), &raw));
        return Task(raw);
    }
    static Task load_bytes(const void *data, std::size_t len, const Model &model) {
        mgecl_task *raw = nullptr;
        detail::check(
            mgecl_task_load_bytes(static_cast<const uint8_t *>(data), len, model.get(), &raw));
        return Task(raw);
    }

    void add_class(const std::string &label) {
        detail::check(mgecl_task_add_class(get(), label.c_str()));
    }
    void remove_class(const std::string &label) {
        detail::check(mgecl_task_remove_class(get(), label.c_str()));
    }
    /// Embeds the image and adds it to class `label`; returns the example id.
    uint64_t add_example(const std::string &label, const Image &image) {
        mgecl_image raw = image.raw();
        uint64_t id = 0;
        detail::check(mgecl_task_add_example(get(), label.c_str(), &raw, &id));
        return id;
    }
    uint64_t add_example_feature(const std::string &label, const std::vector<float> &feature) {
        uint64_t id = 0;
        detail::check(mgecl_task_add_example_feature(get(), label.c_str(), feature.data(),
                                                     feature.size(), &id));
        return id;
    }
    void remove_example(uint64_t id) { detail::check(mgecl_task_remove_example(get(), id)); }

    /// Class labels in the order they were added.
    std::vector<std::string> classes() const {
        std::size_t n = 0;
        detail::check(mgecl_task_class_count(get(), &n));
        std::vector<std::string> labels;
        for (std::size_t i = 0; i < n; i++) labels.push_back(label(i));
        return labels;
    }
    std::string label(std::size_t index) const {
        const char *text = nullptr;
        detail::check(mgecl_task_class_label(get(), index, &text));
        return text;
    }
    std::vector<uint64_t> class_examples(std::size_t index) const {
        std::size_t needed = 0;
        mgecl_status s = mgecl_task_class_examples(get(), index, nullptr, 0, &needed);
        if (s != MGECL_STATUS_BUFFER_TOO_SMALL) detail::check(s);
        std::vector<uint64_t> ids(needed);
        detail::check(mgecl_task_class_examples(get(), index, ids.data(), ids.size(), nullptr));
        return ids;
    }

    TaskOptions options() const {
        TaskOptions o{};
        o.struct_size = sizeof o;
        detail::check(mgecl_task_get_options(get(), &o));
        return o;
    }
    void set_options(const TaskOptions &options) {
        detail::check(mgecl_task_set_options(get(), &options));
    }
    bool is_fitted() const {
        bool fitted = false;
        detail::check(mgecl_task_is_fitted(get(), &fitted));
        return fitted;
    }
    FitReport fit() {
        FitReport report{};
        report.struct_size = sizeof report;
        detail::check(mgecl_task_fit(get(), &report));
        return report;
    }

    Prediction classify(const Image &image) const {
        mgecl_image raw = image.raw();
        mgecl_prediction p;
        detail::check(mgecl_task_classify(get(), &raw, &p));
        return convert(p);
    }
    std::vector<Prediction> classify(const std::vector<Image> &images) const {
        std::vector<mgecl_image> raw;
        for (const Image &image : images) raw.push_back(image.raw());
        std::vector<mgecl_prediction> out(raw.size());
        detail::check(
            mgecl_task_classify_batch(get(), raw.data(), raw.size(), out.data(), out.size()));
        std::vector<Prediction> predictions;
        for (const mgecl_prediction &p : out) predictions.push_back(convert(p));
        return predictions;
    }
    /// Features of query images as classify() sees them (with the task's query augmentation,
    /// if any): images.size() rows of feature_dim floats, row-major, for classify_feature,
    /// label_next and label_csv.
    std::vector<float> embed_queries(const std::vector<Image> &images) const {
        std::vector<mgecl_image> raw;
        for (const Image &image : images) raw.push_back(image.raw());
        std::size_t needed = 0;
        mgecl_status s =
            mgecl_task_embed_queries(get(), raw.data(), raw.size(), nullptr, 0, &needed);
        if (s != MGECL_STATUS_BUFFER_TOO_SMALL) detail::check(s);
        std::vector<float> out(needed);
        detail::check(mgecl_task_embed_queries(get(), raw.data(), raw.size(), out.data(),
                                               out.size(), nullptr));
        return out;
    }
    Prediction classify_feature(const std::vector<float> &feature) const {
        mgecl_prediction p;
        detail::check(mgecl_task_classify_feature(get(), feature.data(), feature.size(), &p));
        return convert(p);
    }
    /// The `count` rows of `features` (`rows` x feature_dim, row-major, as Model::embed
    /// returns them) most worth labelling next, best first, as (row, score).
    std::vector<std::pair<std::size_t, double>> label_next(const std::vector<float> &features,
                                                           std::size_t rows,
                                                           std::size_t count) const {
        std::size_t wanted = count < rows ? count : rows;
        std::vector<std::size_t> index(wanted);
        std::vector<double> score(wanted);
        std::size_t n = 0;
        detail::check(mgecl_task_label_next(get(), features.data(), rows,
                                            rows ? features.size() / rows : 0, count,
                                            index.data(), score.data(), wanted, &n));
        std::vector<std::pair<std::size_t, double>> out;
        for (std::size_t i = 0; i < n; i++) out.emplace_back(index[i], score[i]);
        return out;
    }
    /// The k most probable classes as (label, probability), best first.
    std::vector<std::pair<std::string, double>> top_k(const Image &image, std::size_t k) const {
        mgecl_image raw = image.raw();
        std::vector<std::size_t> index(k);
        std::vector<double> probability(k);
        std::size_t n = 0;
        detail::check(mgecl_task_classify_top_k(get(), &raw, k, index.data(), probability.data(),
                                                &n));
        std::vector<std::pair<std::string, double>> out;
        for (std::size_t i = 0; i < n; i++) out.emplace_back(label(index[i]), probability[i]);
        return out;
    }
    void save(const std::string &path) const {
        detail::check(mgecl_task_save(get(), path.c_str()));
    }

    mgecl_task *get() const noexcept { return handle_.get(); }

  private:
    explicit Task(mgecl_task *raw) : handle_(raw) {}
    static Prediction convert(const mgecl_prediction &p) {
        Prediction out{std::nullopt, p.class_index, p.probability, p.known_probability};
        if (p.label) out.label = std::string(p.label);
        return out;
    }
    std::unique_ptr<mgecl_task, detail::TaskFree> handle_;
};

}  // namespace mgecl

#endif  // MGECL_HPP
