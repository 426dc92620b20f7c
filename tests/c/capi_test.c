/*
 * The C API from C: every error path of the conventions (NULL pointers, invalid UTF-8,
 * too-small buffers, outputs untouched on failure, use after a failed call, _free(NULL)),
 * the whole model and task API on the Conv-4 fixture, and one model shared by many threads
 * with results identical to a single thread, transductive batches (printed for c_api.rs to
 * compare with the Rust API), and the structs that grow read at an older header's size and
 * refused at a newer one's, and a task built from a support folder (mgecl_task_add_folder)
 * against the same task built image by image. Built with -DMGECL_TEST_HOOKS against a library
 * built with the test-hooks feature, it also forces a Rust panic inside a call.
 *
 * usage: capi_test MODEL IMAGE_DIR TMP_DIR
 * env:   MGECL_TEST_THREADS (default 8), MGECL_TEST_ITERATIONS (default 10)
 *
 * Prints one FAIL line per failed check and a summary "capi_test: N passed, M failed";
 * exits 0 only when nothing failed.
 */
#include <math.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mgecl.h"
#include "read_file.h"

#define N_IMAGES 4
#define DIM 64
#define MAX_THREADS 64

static int passed, failed;

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (cond) {                                                                        \
            passed++;                                                                      \
        } else {                                                                           \
            failed++;                                                                      \
            printf("FAIL %s:%d: %s (last error: %s)\n", __FILE__, __LINE__, #cond,         \
                   mgecl_last_error_message());                                            \
        }                                                                                  \
    } while (0)

#define EXPECT(call, want)                                                                 \
    do {                                                                                   \
        mgecl_status got_ = (call);                                                        \
        if (got_ == (want)) {                                                              \
            passed++;                                                                      \
        } else {                                                                           \
            failed++;                                                                      \
            printf("FAIL %s:%d: %s returned %s, expected %s (last error: %s)\n", __FILE__, \
                   __LINE__, #call, mgecl_status_name(got_), mgecl_status_name(want),     \
                   mgecl_last_error_message());                                            \
        }                                                                                  \
    } while (0)

#define OK(call) EXPECT(call, MGECL_STATUS_OK)

/* The last error message contains `text`. */
static int error_says(const char *text) {
    return strstr(mgecl_last_error_message(), text) != NULL;
}

static char image_paths[N_IMAGES][4096];
static const char *labels[N_IMAGES] = {"zero", "zero", "two", "two"};
/* An invalid UTF-8 sequence (a lone continuation byte and an overlong lead). */
static const char bad_utf8[] = {'b', 'a', 'd', (char)0xC3, (char)0x28, (char)0xFF, 0};

/* The library's default task options (a by-value copy is safe within one header). */
static mgecl_task_options default_options(void) {
    mgecl_task_options options;
    OK(mgecl_task_options_init(&options, sizeof options));
    return options;
}

static void test_library(void) {
    CHECK(strcmp(mgecl_version(), MGECL_VERSION) == 0);
    CHECK(mgecl_last_error_message() != NULL);
    CHECK(strcmp(mgecl_status_name(MGECL_STATUS_PANIC), "MGECL_STATUS_PANIC") == 0);
    CHECK(strcmp(mgecl_status_name(12345), "MGECL_STATUS_UNKNOWN") == 0);
    mgecl_model_free(NULL);
    mgecl_task_free(NULL);
    passed++; /* _free(NULL) returned */
}

static mgecl_model *test_model_loading(const char *model_path) {
    mgecl_model *sentinel = (mgecl_model *)&passed;
    mgecl_model *model = sentinel;

    EXPECT(mgecl_model_load(NULL, NULL, &model), MGECL_STATUS_NULL_ARGUMENT);
    CHECK(error_says("path"));
    EXPECT(mgecl_model_load(model_path, NULL, NULL), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_model_load(bad_utf8, NULL, &model), MGECL_STATUS_INVALID_ARGUMENT);
    CHECK(error_says("UTF-8"));
    EXPECT(mgecl_model_load("/nonexistent/model.safetensors", NULL, &model), MGECL_STATUS_IO);
    CHECK(model == sentinel); /* outputs are written only on success */

    mgecl_load_options options;
    EXPECT(mgecl_load_options_init(NULL, sizeof options), MGECL_STATUS_NULL_ARGUMENT);
    OK(mgecl_load_options_init(&options, sizeof options));
    CHECK(options.struct_size == sizeof options && options.device == NULL &&
          options.metadata_len == 0 && options.max_image_side == 16384 &&
          options.max_image_bytes == 512u << 20 && options.max_embed_bytes == 1u << 30);
    options.device = "tpu";
    EXPECT(mgecl_model_load(model_path, &options, &model), MGECL_STATUS_INVALID_ARGUMENT);
    options.device = "cuda";
    EXPECT(mgecl_model_load(model_path, &options, &model), MGECL_STATUS_DEVICE_UNAVAILABLE);
    options.device = bad_utf8;
    EXPECT(mgecl_model_load(model_path, &options, &model), MGECL_STATUS_INVALID_ARGUMENT);
    options.device = "cpu";
    mgecl_metadata_entry entries[1] = {{NULL, "x"}};
    options.metadata = entries;
    options.metadata_len = 1;
    EXPECT(mgecl_model_load(model_path, &options, &model), MGECL_STATUS_NULL_ARGUMENT);
    entries[0].key = "image_size";
    entries[0].value = NULL;
    EXPECT(mgecl_model_load(model_path, &options, &model), MGECL_STATUS_NULL_ARGUMENT);
    entries[0].value = "[0, 0]";
    EXPECT(mgecl_model_load(model_path, &options, &model), MGECL_STATUS_INVALID_MODEL);
    options.metadata = NULL; /* NULL with a non-zero length */
    EXPECT(mgecl_model_load(model_path, &options, &model), MGECL_STATUS_NULL_ARGUMENT);
    CHECK(model == sentinel);

    const unsigned char garbage[] = "not a safetensors file at all";
    EXPECT(mgecl_model_load_bytes(NULL, 10, NULL, &model), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_model_load_bytes(garbage, sizeof garbage, NULL, NULL),
           MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_model_load_bytes(garbage, sizeof garbage, NULL, &model),
           MGECL_STATUS_INVALID_MODEL);
    CHECK(model == sentinel);

    /* From bytes, with options that change the metadata: a different fingerprint. */
    size_t len = 0;
    unsigned char *bytes = read_file(model_path, &len);
    CHECK(bytes != NULL);
    entries[0].key = "invert";
    entries[0].value = "true";
    options.metadata = entries;
    mgecl_model *inverted = NULL;
    OK(mgecl_model_load_bytes(bytes, len, &options, &inverted));
    free(bytes);

    /* Use after a failed call: the failures above left nothing half-made. */
    OK(mgecl_model_load(model_path, NULL, &model));
    CHECK(model != sentinel && model != NULL);

    mgecl_model_info info = {.struct_size = sizeof info};
    mgecl_model_info inverted_info = {.struct_size = sizeof inverted_info};
    EXPECT(mgecl_model_describe(NULL, &info), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_model_describe(model, NULL), MGECL_STATUS_NULL_ARGUMENT);
    OK(mgecl_model_describe(model, &info));
    CHECK(strcmp(info.arch, "conv4") == 0);
    CHECK(strcmp(info.device, "cpu") == 0);
    CHECK(info.feature_dim == DIM && info.in_channels == 1);
    CHECK(info.image_height == 28 && info.image_width == 28);
    OK(mgecl_model_describe(inverted, &inverted_info));
    CHECK(inverted_info.invert && strcmp(info.fingerprint, inverted_info.fingerprint) != 0);
    mgecl_model_free(inverted);

    /* JSON description into a caller buffer: ask the size, too small, exact. */
    size_t needed = 0;
    EXPECT(mgecl_model_info_json(NULL, NULL, 0, &needed), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_model_info_json(model, NULL, 0, &needed), MGECL_STATUS_BUFFER_TOO_SMALL);
    CHECK(needed > 10);
    char size_text[32];
    snprintf(size_text, sizeof size_text, "%zu", needed);
    CHECK(error_says(size_text)); /* the message reports the size needed */
    char *json = malloc(needed);
    memset(json, '#', needed);
    size_t needed2 = 0;
    EXPECT(mgecl_model_info_json(model, json, needed - 1, &needed2),
           MGECL_STATUS_BUFFER_TOO_SMALL);
    CHECK(needed2 == needed && json[0] == '#'); /* untouched */
    EXPECT(mgecl_model_info_json(model, NULL, needed, NULL), MGECL_STATUS_NULL_ARGUMENT);
    OK(mgecl_model_info_json(model, json, needed, NULL));
    CHECK(strlen(json) == needed - 1);
    CHECK(strstr(json, "\"arch\":\"conv4\"") != NULL);
    CHECK(strstr(json, "\"widths\":[64,64,64,64]") != NULL);
    free(json);
    return model;
}

static void test_embedding(const mgecl_model *model, float *features) {
    mgecl_image images[N_IMAGES];
    for (int i = 0; i < N_IMAGES; i++) images[i] = mgecl_image_file(image_paths[i]);

    /* Too small: nothing written, the size needed reported. */
    float *out = malloc(sizeof(float) * N_IMAGES * DIM);
    for (int i = 0; i < N_IMAGES * DIM; i++) out[i] = -7.0f;
    size_t needed = 0;
    EXPECT(mgecl_model_embed(model, images, N_IMAGES, out, N_IMAGES * DIM - 1, &needed),
           MGECL_STATUS_BUFFER_TOO_SMALL);
    CHECK(needed == N_IMAGES * DIM);
    CHECK(error_says("256"));
    CHECK(out[0] == -7.0f && out[N_IMAGES * DIM - 2] == -7.0f);

    EXPECT(mgecl_model_embed(NULL, images, N_IMAGES, out, N_IMAGES * DIM, NULL),
           MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_model_embed(model, NULL, N_IMAGES, out, N_IMAGES * DIM, NULL),
           MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_model_embed(model, images, N_IMAGES, NULL, N_IMAGES * DIM, NULL),
           MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_model_embed(model, images, 0, out, N_IMAGES * DIM, NULL),
           MGECL_STATUS_INVALID_ARGUMENT);
    mgecl_image bad[2] = {images[0], mgecl_image_file(NULL)};
    EXPECT(mgecl_model_embed(model, bad, 2, out, N_IMAGES * DIM, NULL),
           MGECL_STATUS_NULL_ARGUMENT);
    bad[1] = mgecl_image_file(bad_utf8);
    EXPECT(mgecl_model_embed(model, bad, 2, out, N_IMAGES * DIM, NULL),
           MGECL_STATUS_INVALID_ARGUMENT);
    bad[1] = mgecl_image_file("/nonexistent.png");
    EXPECT(mgecl_model_embed(model, bad, 2, out, N_IMAGES * DIM, NULL), MGECL_STATUS_IO);
    memset(&bad[1], 0, sizeof bad[1]); /* kind 0 is no kind */
    EXPECT(mgecl_model_embed(model, bad, 2, out, N_IMAGES * DIM, NULL),
           MGECL_STATUS_INVALID_ARGUMENT);
    const unsigned char junk[] = {1, 2, 3, 4, 5, 6, 7, 8};
    bad[1] = mgecl_image_encoded(junk, sizeof junk);
    EXPECT(mgecl_model_embed(model, bad, 2, out, N_IMAGES * DIM, NULL),
           MGECL_STATUS_INVALID_IMAGE);
    bad[1] = mgecl_image_encoded(NULL, 10);
    EXPECT(mgecl_model_embed(model, bad, 2, out, N_IMAGES * DIM, NULL),
           MGECL_STATUS_NULL_ARGUMENT);
    CHECK(out[0] == -7.0f);

    /* Use after failed calls: the same model embeds fine. */
    OK(mgecl_model_embed(model, images, N_IMAGES, features, N_IMAGES * DIM, &needed));
    CHECK(needed == N_IMAGES * DIM);
    int finite = 1;
    for (int i = 0; i < N_IMAGES * DIM; i++) finite &= isfinite(features[i]) != 0;
    CHECK(finite);

    /* Released buffers: the next embedding allocates again and gives the same features. */
    OK(mgecl_release_buffers());
    OK(mgecl_model_embed(model, images, N_IMAGES, out, N_IMAGES * DIM, NULL));
    CHECK(memcmp(out, features, sizeof(float) * N_IMAGES * DIM) == 0);

    /* Encoded bytes give exactly the features of the file. */
    size_t len = 0;
    unsigned char *png = read_file(image_paths[2], &len);
    mgecl_image encoded = mgecl_image_encoded(png, len);
    OK(mgecl_model_embed(model, &encoded, 1, out, DIM, NULL));
    CHECK(memcmp(out, features + 2 * DIM, sizeof(float) * DIM) == 0);
    free(png);

    /* Raw pixels: a tight GRAY8 buffer and the same pixels in padded rows agree. */
    unsigned char tight[28 * 28], padded[28 * 40];
    memset(padded, 0xAB, sizeof padded);
    for (int y = 0; y < 28; y++)
        for (int x = 0; x < 28; x++) {
            unsigned char v = (unsigned char)((x * 9 + y * 5) % 256);
            tight[y * 28 + x] = v;
            padded[y * 40 + x] = v;
        }
    float a[DIM], b[DIM];
    mgecl_image pix = mgecl_image_pixels(tight, sizeof tight, 28, 28, 28, MGECL_PIXEL_FORMAT_GRAY8);
    OK(mgecl_model_embed(model, &pix, 1, a, DIM, NULL));
    pix = mgecl_image_pixels(padded, sizeof padded, 28, 28, 40, MGECL_PIXEL_FORMAT_GRAY8);
    OK(mgecl_model_embed(model, &pix, 1, b, DIM, NULL));
    CHECK(memcmp(a, b, sizeof a) == 0);
    pix = mgecl_image_pixels(tight, sizeof tight - 1, 28, 28, 28, MGECL_PIXEL_FORMAT_GRAY8);
    EXPECT(mgecl_model_embed(model, &pix, 1, a, DIM, NULL), MGECL_STATUS_INVALID_ARGUMENT);
    pix = mgecl_image_pixels(tight, sizeof tight, 28, 28, 28, 99);
    EXPECT(mgecl_model_embed(model, &pix, 1, a, DIM, NULL), MGECL_STATUS_INVALID_ARGUMENT);
    /* Hostile geometry: a stride whose product with the height overflows. */
    pix = mgecl_image_pixels(tight, sizeof tight, 28, 3, (SIZE_MAX / 2) + 1,
                             MGECL_PIXEL_FORMAT_GRAY8);
    mgecl_status hostile = mgecl_model_embed(model, &pix, 1, a, DIM, NULL);
    CHECK(hostile != MGECL_STATUS_OK && hostile != MGECL_STATUS_PANIC);
    pix = mgecl_image_pixels(tight, sizeof tight, 100000, 100000, 100000,
                             MGECL_PIXEL_FORMAT_GRAY8);
    EXPECT(mgecl_model_embed(model, &pix, 1, a, DIM, NULL), MGECL_STATUS_LIMIT_EXCEEDED);
    pix = mgecl_image_pixels(NULL, sizeof tight, 28, 28, 28, MGECL_PIXEL_FORMAT_GRAY8);
    EXPECT(mgecl_model_embed(model, &pix, 1, a, DIM, NULL), MGECL_STATUS_NULL_ARGUMENT);
    free(out);
}

typedef struct {
    size_t class_index[N_IMAGES];
    double probability[N_IMAGES];
} answers;

static mgecl_task *test_task(const mgecl_model *model, const float *features, answers *expected,
                             const char *task_path) {
    mgecl_task *sentinel = (mgecl_task *)&failed;
    mgecl_task *task = sentinel;
    mgecl_task_options options = default_options();
    CHECK(options.classifier == MGECL_CLASSIFIER_PROTOTYPE);
    CHECK(options.alpha == 1.0 && options.max_iterations == 1000 && !options.use_threshold);
    CHECK(options.augmented_copies == 0 && options.augmentation == MGECL_AUGMENTATION_ROTATE &&
          !options.augment_queries && options.transductive == 0);

    EXPECT(mgecl_task_new(NULL, NULL, &task), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_new(model, NULL, NULL), MGECL_STATUS_NULL_ARGUMENT);
    options.alpha = -1.0;
    EXPECT(mgecl_task_new(model, &options, &task), MGECL_STATUS_INVALID_ARGUMENT);
    options.alpha = 1.0;
    options.classifier = 42;
    EXPECT(mgecl_task_new(model, &options, &task), MGECL_STATUS_INVALID_ARGUMENT);
    options.classifier = MGECL_CLASSIFIER_PROTOTYPE;
    options.augmentation = 7;
    EXPECT(mgecl_task_new(model, &options, &task), MGECL_STATUS_INVALID_ARGUMENT);
    CHECK(error_says("augmentation"));
    options.augmentation = MGECL_AUGMENTATION_ROTATE;
    options.classifier = MGECL_CLASSIFIER_LOGISTIC;
    CHECK(task == sentinel);
    OK(mgecl_task_new(model, &options, &task));

    /* Classes: NULL, bad UTF-8, empty, duplicate, unknown. */
    EXPECT(mgecl_task_add_class(NULL, "zero"), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_add_class(task, NULL), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_add_class(task, bad_utf8), MGECL_STATUS_INVALID_ARGUMENT);
    CHECK(error_says("UTF-8"));
    EXPECT(mgecl_task_add_class(task, ""), MGECL_STATUS_INVALID_ARGUMENT);
    OK(mgecl_task_add_class(task, "zero"));
    EXPECT(mgecl_task_add_class(task, "zero"), MGECL_STATUS_DUPLICATE_LABEL);
    EXPECT(mgecl_task_remove_class(task, "nine"), MGECL_STATUS_UNKNOWN_LABEL);
    EXPECT(mgecl_task_remove_class(task, bad_utf8), MGECL_STATUS_INVALID_ARGUMENT);
    EXPECT(mgecl_task_remove_class(NULL, "zero"), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_remove_class(task, NULL), MGECL_STATUS_NULL_ARGUMENT);

    size_t count = 99;
    EXPECT(mgecl_task_class_count(NULL, &count), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_class_count(task, NULL), MGECL_STATUS_NULL_ARGUMENT);
    OK(mgecl_task_class_count(task, &count));
    CHECK(count == 1);

    /* Examples: errors leave the task unchanged. */
    mgecl_image image = mgecl_image_file(image_paths[0]);
    mgecl_image missing = mgecl_image_file("/nonexistent.png");
    uint64_t id = 777;
    EXPECT(mgecl_task_add_example(NULL, "zero", &image, &id), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_add_example(task, NULL, &image, &id), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_add_example(task, "zero", NULL, &id), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_add_example(task, bad_utf8, &image, &id), MGECL_STATUS_INVALID_ARGUMENT);
    EXPECT(mgecl_task_add_example(task, "nine", &image, &id), MGECL_STATUS_UNKNOWN_LABEL);
    EXPECT(mgecl_task_add_example(task, "zero", &missing, &id), MGECL_STATUS_IO);
    EXPECT(mgecl_task_add_example_feature(task, "zero", features, DIM - 1, &id),
           MGECL_STATUS_INVALID_ARGUMENT);
    EXPECT(mgecl_task_add_example_feature(task, "zero", NULL, DIM, &id),
           MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_add_example_feature(NULL, "zero", features, DIM, &id),
           MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_add_example_feature(task, NULL, features, DIM, &id),
           MGECL_STATUS_NULL_ARGUMENT);
    CHECK(id == 777);
    size_t n_ids = 99;
    uint64_t ids[4];
    OK(mgecl_task_class_examples(task, 0, ids, 4, &n_ids));
    CHECK(n_ids == 0);

    /* Not ready: one class; then not fitted. */
    mgecl_fit_report report = {.struct_size = sizeof report};
    EXPECT(mgecl_task_fit(task, &report), MGECL_STATUS_INVALID_TASK);
    EXPECT(mgecl_task_fit(NULL, &report), MGECL_STATUS_NULL_ARGUMENT);
    mgecl_prediction prediction;
    EXPECT(mgecl_task_classify(task, &image, &prediction), MGECL_STATUS_NOT_FITTED);

    /* Use after the failed calls: register the images (0, 1 -> zero; 2, 3 -> two). */
    OK(mgecl_task_add_class(task, "two"));
    uint64_t first_id = 0;
    for (int i = 0; i < N_IMAGES; i++) {
        mgecl_image img = mgecl_image_file(image_paths[i]);
        OK(mgecl_task_add_example(task, labels[i], &img, i == 0 ? &first_id : NULL));
    }
    CHECK(first_id >= 1);
    /* A feature example, then removed again by id. */
    OK(mgecl_task_add_example_feature(task, "two", features + 3 * DIM, DIM, &id));
    EXPECT(mgecl_task_class_examples(task, 1, ids, 2, &n_ids), MGECL_STATUS_BUFFER_TOO_SMALL);
    CHECK(n_ids == 3);
    OK(mgecl_task_class_examples(task, 1, ids, 4, &n_ids));
    CHECK(n_ids == 3 && ids[2] == id);
    EXPECT(mgecl_task_class_examples(task, 5, ids, 4, &n_ids), MGECL_STATUS_INVALID_ARGUMENT);
    EXPECT(mgecl_task_class_examples(task, 1, NULL, 4, &n_ids), MGECL_STATUS_NULL_ARGUMENT);
    OK(mgecl_task_remove_example(task, id));
    EXPECT(mgecl_task_remove_example(task, id), MGECL_STATUS_UNKNOWN_EXAMPLE);
    EXPECT(mgecl_task_remove_example(NULL, id), MGECL_STATUS_NULL_ARGUMENT);

    const char *label = NULL;
    OK(mgecl_task_class_label(task, 1, &label));
    CHECK(label && strcmp(label, "two") == 0);
    EXPECT(mgecl_task_class_label(task, 2, &label), MGECL_STATUS_INVALID_ARGUMENT);
    EXPECT(mgecl_task_class_label(task, 0, NULL), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_class_label(NULL, 0, &label), MGECL_STATUS_NULL_ARGUMENT);

    bool fitted = true;
    OK(mgecl_task_is_fitted(task, &fitted));
    CHECK(!fitted);
    EXPECT(mgecl_task_is_fitted(task, NULL), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_is_fitted(NULL, &fitted), MGECL_STATUS_NULL_ARGUMENT);
    OK(mgecl_task_fit(task, &report));
    CHECK(report.converged && report.classes == 2 && report.rows == 4);
    CHECK(report.classifier == MGECL_CLASSIFIER_LOGISTIC);
    OK(mgecl_task_fit(task, NULL));
    OK(mgecl_task_is_fitted(task, &fitted));
    CHECK(fitted);

    /* Classify each image: the support images come back as their own class. */
    for (int i = 0; i < N_IMAGES; i++) {
        mgecl_image img = mgecl_image_file(image_paths[i]);
        OK(mgecl_task_classify(task, &img, &prediction));
        CHECK(prediction.label && strcmp(prediction.label, labels[i]) == 0);
        CHECK(prediction.probability > 0.5 && prediction.probability <= 1.0);
        expected->class_index[i] = prediction.class_index;
        expected->probability[i] = prediction.probability;
        /* The same answer from the image's feature. */
        mgecl_prediction from_feature;
        OK(mgecl_task_classify_feature(task, features + i * DIM, DIM, &from_feature));
        CHECK(from_feature.class_index == prediction.class_index);
        CHECK(fabs(from_feature.probability - prediction.probability) < 1e-12);
        printf("%s -> %s %.4f\n", strrchr(image_paths[i], '/') + 1, prediction.label,
               prediction.probability);
    }
    EXPECT(mgecl_task_classify(NULL, &image, &prediction), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_classify(task, NULL, &prediction), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_classify(task, &image, NULL), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_classify(task, &missing, &prediction), MGECL_STATUS_IO);
    EXPECT(mgecl_task_classify_feature(task, features, DIM + 1, &prediction),
           MGECL_STATUS_INVALID_ARGUMENT);
    EXPECT(mgecl_task_classify_feature(task, NULL, DIM, &prediction),
           MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_classify_feature(task, features, DIM, NULL), MGECL_STATUS_NULL_ARGUMENT);

    /* Label next: the four rows ranked; picks are distinct rows, scores never increase. */
    size_t next[N_IMAGES];
    double next_scores[N_IMAGES];
    size_t n_next = 99;
    OK(mgecl_task_label_next(task, features, N_IMAGES, DIM, 3, next, next_scores, N_IMAGES,
                             &n_next));
    CHECK(n_next == 3);
    for (size_t i = 0; i < n_next; i++) {
        CHECK(next[i] < N_IMAGES && next_scores[i] >= 0.0);
        for (size_t j = 0; j < i; j++) CHECK(next[j] != next[i]);
        if (i > 0) CHECK(next_scores[i] <= next_scores[i - 1]);
    }
    OK(mgecl_task_label_next(task, features, N_IMAGES, DIM, 10, next, next_scores, N_IMAGES,
                             &n_next));
    CHECK(n_next == N_IMAGES);
    EXPECT(mgecl_task_label_next(task, features, N_IMAGES, DIM, 3, next, next_scores, 2, &n_next),
           MGECL_STATUS_BUFFER_TOO_SMALL);
    EXPECT(mgecl_task_label_next(task, features, 2, DIM + 1, 1, next, next_scores, N_IMAGES,
                                 &n_next),
           MGECL_STATUS_INVALID_ARGUMENT);
    EXPECT(mgecl_task_label_next(task, NULL, N_IMAGES, DIM, 1, next, next_scores, N_IMAGES,
                                 &n_next),
           MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_label_next(task, features, N_IMAGES, DIM, 1, next, next_scores, N_IMAGES,
                                 NULL),
           MGECL_STATUS_NULL_ARGUMENT);

    /* mgecl label's CSV of the four rows: ask the size, then fill; a header and four rows. */
    const char *csv_paths[N_IMAGES] = {"a.png", "b,c.png", "d.png", "e.png"};
    size_t csv_needed = 0;
    EXPECT(mgecl_task_label_csv(task, features, N_IMAGES, DIM, csv_paths, 0.8, 2, NULL, 0,
                                &csv_needed),
           MGECL_STATUS_BUFFER_TOO_SMALL);
    CHECK(csv_needed > 100);
    char *csv = malloc(csv_needed);
    OK(mgecl_task_label_csv(task, features, N_IMAGES, DIM, csv_paths, 0.8, 2, csv, csv_needed,
                            NULL));
    CHECK(strlen(csv) + 1 == csv_needed);
    CHECK(strncmp(csv, "path,label,probability,needs_review,runner_up,", 46) == 0);
    CHECK(strstr(csv, "\n\"b,c.png\",") != NULL); /* quoted: it holds a comma */
    int csv_lines = 0;
    for (const char *c = csv; *c; c++) csv_lines += *c == '\n';
    CHECK(csv_lines == N_IMAGES + 1);
    free(csv);
    EXPECT(mgecl_task_label_csv(task, features, N_IMAGES, DIM, csv_paths, 1.5, 2, NULL, 0,
                                &csv_needed),
           MGECL_STATUS_INVALID_ARGUMENT);
    EXPECT(mgecl_task_label_csv(task, features, N_IMAGES, DIM, NULL, 0.8, 2, NULL, 0,
                                &csv_needed),
           MGECL_STATUS_NULL_ARGUMENT);

    /* Labelling files: a missing one gets a row with its error; the others as above. */
    const char *label_paths[3] = {image_paths[0], "/nonexistent/x.png", image_paths[1]};
    EXPECT(mgecl_task_label_paths_csv(task, label_paths, 3, 0.8, 1, NULL, 0, &csv_needed),
           MGECL_STATUS_BUFFER_TOO_SMALL);
    csv = malloc(csv_needed);
    OK(mgecl_task_label_paths_csv(task, label_paths, 3, 0.8, 1, csv, csv_needed, NULL));
    CHECK(strstr(csv, ",label_next,error\n") != NULL);
    CHECK(strstr(csv, "\n/nonexistent/x.png,,,,,,,,") != NULL);
    CHECK(strstr(strstr(csv, ",,,,,,,,"), "/nonexistent/x.png") != NULL); /* the error names it */
    free(csv);
    EXPECT(mgecl_task_label_paths_csv(task, label_paths, 0, 0.8, 1, NULL, 0, &csv_needed),
           MGECL_STATUS_INVALID_ARGUMENT);
    EXPECT(mgecl_task_label_paths_csv(task, NULL, 3, 0.8, 1, NULL, 0, &csv_needed),
           MGECL_STATUS_NULL_ARGUMENT);

    /* Batch: too small, then all four. */
    mgecl_image images[N_IMAGES];
    for (int i = 0; i < N_IMAGES; i++) images[i] = mgecl_image_file(image_paths[i]);
    mgecl_prediction batch[N_IMAGES];
    EXPECT(mgecl_task_classify_batch(task, images, N_IMAGES, batch, N_IMAGES - 1),
           MGECL_STATUS_BUFFER_TOO_SMALL);
    CHECK(error_says("4"));
    EXPECT(mgecl_task_classify_batch(task, images, 0, batch, N_IMAGES),
           MGECL_STATUS_INVALID_ARGUMENT);
    OK(mgecl_task_classify_batch(task, images, N_IMAGES, batch, N_IMAGES));
    for (int i = 0; i < N_IMAGES; i++) {
        CHECK(batch[i].class_index == expected->class_index[i]);
        CHECK(fabs(batch[i].probability - expected->probability[i]) < 1e-9);
    }

    /* Top-k: best first, k larger than the classes gives all of them. */
    size_t top_index[3];
    double top_p[3];
    size_t top_n = 0;
    OK(mgecl_task_classify_top_k(task, &images[2], 3, top_index, top_p, &top_n));
    CHECK(top_n == 2);
    CHECK(top_index[0] == expected->class_index[2] && top_p[0] == expected->probability[2]);
    CHECK(top_p[0] >= top_p[1] && fabs(top_p[0] + top_p[1] - 1.0) < 1e-9);
    OK(mgecl_task_classify_top_k(task, &images[2], 1, top_index, top_p, &top_n));
    CHECK(top_n == 1);
    EXPECT(mgecl_task_classify_top_k(task, &images[2], 0, top_index, top_p, &top_n),
           MGECL_STATUS_INVALID_ARGUMENT);
    EXPECT(mgecl_task_classify_top_k(task, &images[2], 2, NULL, top_p, &top_n),
           MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_classify_top_k(task, &images[2], 2, top_index, NULL, &top_n),
           MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_classify_top_k(task, &images[2], 2, top_index, top_p, NULL),
           MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_classify_top_k(task, NULL, 2, top_index, top_p, &top_n),
           MGECL_STATUS_NULL_ARGUMENT);

    /* Options: an impossible threshold turns every answer into "unknown" (label NULL). */
    mgecl_task_options current = {.struct_size = sizeof current};
    EXPECT(mgecl_task_get_options(NULL, &current), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_get_options(task, NULL), MGECL_STATUS_NULL_ARGUMENT);
    OK(mgecl_task_get_options(task, &current));
    mgecl_task_options strict = current;
    strict.use_threshold = true;
    strict.threshold = 2.0;
    EXPECT(mgecl_task_set_options(task, &strict), MGECL_STATUS_INVALID_ARGUMENT);
    strict.threshold = 1.0;
    EXPECT(mgecl_task_set_options(NULL, &strict), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_set_options(task, NULL), MGECL_STATUS_NULL_ARGUMENT);
    OK(mgecl_task_set_options(task, &strict));
    EXPECT(mgecl_task_classify(task, &image, &prediction), MGECL_STATUS_NOT_FITTED);
    OK(mgecl_task_fit(task, NULL));
    OK(mgecl_task_classify(task, &image, &prediction));
    CHECK(prediction.label == NULL && prediction.class_index == expected->class_index[0]);
    /* The prototype classifier, then back to the original settings. */
    mgecl_task_options proto = current;
    proto.classifier = MGECL_CLASSIFIER_PROTOTYPE;
    OK(mgecl_task_set_options(task, &proto));
    OK(mgecl_task_fit(task, &report));
    CHECK(report.classifier == MGECL_CLASSIFIER_PROTOTYPE && report.converged);
    OK(mgecl_task_set_options(task, &current));
    OK(mgecl_task_fit(task, NULL));

    /* Save and load. */
    EXPECT(mgecl_task_save(NULL, task_path), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_save(task, NULL), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_save(task, bad_utf8), MGECL_STATUS_INVALID_ARGUMENT);
    EXPECT(mgecl_task_save(task, "/nonexistent/dir/task.safetensors"), MGECL_STATUS_IO);
    OK(mgecl_task_save(task, task_path));
    mgecl_task *loaded = sentinel;
    EXPECT(mgecl_task_load(NULL, model, &loaded), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_load(task_path, NULL, &loaded), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_load(task_path, model, NULL), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_load(bad_utf8, model, &loaded), MGECL_STATUS_INVALID_ARGUMENT);
    EXPECT(mgecl_task_load(image_paths[0], model, &loaded), MGECL_STATUS_INVALID_TASK_FILE);
    EXPECT(mgecl_task_load("/nonexistent.task", model, &loaded), MGECL_STATUS_IO);
    CHECK(loaded == sentinel);
    OK(mgecl_task_load(task_path, model, &loaded));
    OK(mgecl_task_classify(loaded, &images[3], &prediction));
    CHECK(prediction.class_index == expected->class_index[3]);
    CHECK(prediction.probability == expected->probability[3]);
    mgecl_task_free(loaded);

    size_t len = 0;
    unsigned char *bytes = read_file(task_path, &len);
    loaded = sentinel;
    EXPECT(mgecl_task_load_bytes(NULL, len, model, &loaded), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_load_bytes(bytes, len, NULL, &loaded), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_load_bytes(bytes, len / 2, model, &loaded),
           MGECL_STATUS_INVALID_TASK_FILE);
    CHECK(loaded == sentinel);
    OK(mgecl_task_load_bytes(bytes, len, model, &loaded));
    mgecl_task_free(loaded);
    free(bytes);

    /* Removing a class invalidates the fit. */
    mgecl_task *scratch = NULL;
    OK(mgecl_task_load(task_path, model, &scratch));
    OK(mgecl_task_remove_class(scratch, "zero"));
    OK(mgecl_task_class_count(scratch, &count));
    CHECK(count == 1);
    EXPECT(mgecl_task_classify(scratch, &image, &prediction), MGECL_STATUS_NOT_FITTED);
    mgecl_task_free(scratch);
    return task;
}

/* A model's recommended task options (metadata task_defaults): what NULL options give. */
static void test_model_task_options(const char *model_path, const mgecl_model *plain) {
    mgecl_task_options options = {.struct_size = sizeof options};
    EXPECT(mgecl_model_task_options(NULL, &options), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_model_task_options(plain, NULL), MGECL_STATUS_NULL_ARGUMENT);
    OK(mgecl_model_task_options(plain, &options));
    mgecl_task_options defaults = default_options();
    CHECK(options.augmented_copies == defaults.augmented_copies &&
          options.augment_queries == defaults.augment_queries &&
          options.classifier == defaults.classifier && options.alpha == defaults.alpha);

    mgecl_metadata_entry entry = {"task_defaults",
                                  "{\"augmented_copies\":2,\"augment_queries\":true}"};
    mgecl_load_options load = {.struct_size = sizeof load};
    load.metadata = &entry;
    load.metadata_len = 1;
    mgecl_model *model = NULL;
    OK(mgecl_model_load(model_path, &load, &model));
    OK(mgecl_model_task_options(model, &options));
    CHECK(options.augmented_copies == 2 && options.augment_queries &&
          options.augmentation == MGECL_AUGMENTATION_ROTATE &&
          options.classifier == defaults.classifier);
    mgecl_task *task = NULL;
    OK(mgecl_task_new(model, NULL, &task));
    mgecl_task_options used = {.struct_size = sizeof used};
    OK(mgecl_task_get_options(task, &used));
    CHECK(used.augmented_copies == 2 && used.augment_queries);
    mgecl_task_free(task);
    mgecl_model_free(model);

    entry.value = "{\"augmented_copies\":99}";
    model = NULL;
    EXPECT(mgecl_model_load(model_path, &load, &model), MGECL_STATUS_INVALID_MODEL);
    CHECK(model == NULL && error_says("task_defaults"));
}

/* Query embedding the task's way: without augmentation it is mgecl_model_embed's; with
 * augmented queries it differs, and classifying its rows answers what classify_batch answers. */
/* Writes `len` bytes to `path`; returns whether it worked. */
static int write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    size_t written = fwrite(data, 1, len, f);
    return fclose(f) == 0 && written == len;
}

/* `dir/name` in `out` (checked: not cut short). */
static void join(char *out, size_t size, const char *dir, const char *name) {
    int n = snprintf(out, size, "%s/%s", dir, name);
    CHECK(n > 0 && (size_t)n < size);
}

/* Copies image `i` of the fixture to `dir/name`. */
static void copy_image(int i, const char *dir, const char *name) {
    size_t len = 0;
    unsigned char *data = read_file(image_paths[i], &len);
    char path[4096];
    join(path, sizeof path, dir, name);
    CHECK(data != NULL && write_file(path, data, len));
    free(data);
}

/* `base/name` made as a folder (already there is fine), its path in `out`. */
static void make_dir(char *out, size_t size, const char *base, const char *name) {
    join(out, size, base, name);
    mkdir(out, 0755);
}

/* mgecl_task_add_folder: a support folder (zero/: images 0, 1 and a text file; two/: 2, 3;
 * .hidden/: skipped) gives the task built by hand with the same classes (sorted by name) and
 * the same files, class by class in name order: the same answers, bit for bit. Damaged
 * images are all named in one error, and a failed call leaves the task without the
 * folder's classes. */
static void test_add_folder(const mgecl_model *model, const char *tmp_dir) {
    char support[4096], zero[4096], two[4096], hidden[4096], path[4096];
    make_dir(support, sizeof support, tmp_dir, "support");
    make_dir(zero, sizeof zero, support, "zero");
    make_dir(two, sizeof two, support, "two");
    make_dir(hidden, sizeof hidden, support, ".hidden");
    copy_image(0, zero, "a.png");
    copy_image(1, zero, "b.png");
    copy_image(2, two, "a.png");
    copy_image(3, two, "b.png");
    copy_image(3, hidden, "a.png");
    join(path, sizeof path, zero, "notes.txt");
    CHECK(write_file(path, "not an image", 12));

    mgecl_task *folder_task = NULL, *by_hand = NULL;
    OK(mgecl_task_new(model, NULL, &folder_task));
    size_t examples = 99;
    EXPECT(mgecl_task_add_folder(NULL, support, &examples), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_add_folder(folder_task, NULL, &examples), MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_add_folder(folder_task, bad_utf8, &examples),
           MGECL_STATUS_INVALID_ARGUMENT);
    EXPECT(mgecl_task_add_folder(folder_task, "/nonexistent/support", &examples),
           MGECL_STATUS_IO);
    EXPECT(mgecl_task_add_folder(folder_task, zero, &examples), MGECL_STATUS_INVALID_ARGUMENT);
    CHECK(error_says("no class folders"));
    CHECK(examples == 99);
    OK(mgecl_task_add_folder(folder_task, support, &examples));
    CHECK(examples == 4);
    EXPECT(mgecl_task_add_folder(folder_task, support, NULL), MGECL_STATUS_DUPLICATE_LABEL);
    size_t count = 0;
    OK(mgecl_task_class_count(folder_task, &count));
    CHECK(count == 2);
    const char *label = NULL;
    OK(mgecl_task_class_label(folder_task, 0, &label));
    CHECK(label != NULL && strcmp(label, "two") == 0);
    OK(mgecl_task_class_label(folder_task, 1, &label));
    CHECK(label != NULL && strcmp(label, "zero") == 0);
    OK(mgecl_task_fit(folder_task, NULL));

    OK(mgecl_task_new(model, NULL, &by_hand));
    const char *classes[2] = {"two", "zero"};
    const char *dirs[2] = {two, zero};
    for (int c = 0; c < 2; c++) {
        OK(mgecl_task_add_class(by_hand, classes[c]));
        for (int k = 0; k < 2; k++) {
            join(path, sizeof path, dirs[c], k == 0 ? "a.png" : "b.png");
            mgecl_image image = mgecl_image_file(path);
            OK(mgecl_task_add_example(by_hand, classes[c], &image, NULL));
        }
    }
    OK(mgecl_task_fit(by_hand, NULL));
    for (int i = 0; i < N_IMAGES; i++) {
        mgecl_image image = mgecl_image_file(image_paths[i]);
        mgecl_prediction from_folder, from_hand;
        OK(mgecl_task_classify(folder_task, &image, &from_folder));
        OK(mgecl_task_classify(by_hand, &image, &from_hand));
        CHECK(from_folder.class_index == from_hand.class_index &&
              from_folder.probability == from_hand.probability &&
              from_folder.known_probability == from_hand.known_probability);
        CHECK(from_folder.label != NULL && strcmp(from_folder.label, labels[i]) == 0);
    }

    /* Damaged images: both named, and the task keeps none of the folder's classes. */
    char damaged[4096], good[4096], bad[4096];
    make_dir(damaged, sizeof damaged, tmp_dir, "damaged_support");
    make_dir(good, sizeof good, damaged, "good");
    make_dir(bad, sizeof bad, damaged, "bad");
    copy_image(0, good, "a.png");
    join(path, sizeof path, good, "broken1.png");
    CHECK(write_file(path, "\x89PNG truncated", 14));
    join(path, sizeof path, bad, "broken2.jpg");
    CHECK(write_file(path, "not a jpeg", 10));
    mgecl_task *damaged_task = NULL;
    OK(mgecl_task_new(model, NULL, &damaged_task));
    EXPECT(mgecl_task_add_folder(damaged_task, damaged, NULL), MGECL_STATUS_INVALID_IMAGE);
    CHECK(error_says("broken1.png") && error_says("broken2.jpg"));
    OK(mgecl_task_class_count(damaged_task, &count));
    CHECK(count == 0);

    mgecl_task_free(damaged_task);
    mgecl_task_free(by_hand);
    mgecl_task_free(folder_task);
}

static void test_embed_queries(const mgecl_model *model, const float *features) {
    mgecl_image images[N_IMAGES];
    for (int i = 0; i < N_IMAGES; i++) images[i] = mgecl_image_file(image_paths[i]);
    mgecl_task_options options = default_options();
    mgecl_task *plain = NULL;
    OK(mgecl_task_new(model, &options, &plain));
    float rows[N_IMAGES * DIM];
    size_t needed = 0;
    EXPECT(mgecl_task_embed_queries(plain, images, N_IMAGES, rows, N_IMAGES * DIM - 1, &needed),
           MGECL_STATUS_BUFFER_TOO_SMALL);
    CHECK(needed == N_IMAGES * DIM);
    EXPECT(mgecl_task_embed_queries(NULL, images, N_IMAGES, rows, N_IMAGES * DIM, NULL),
           MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_embed_queries(plain, NULL, N_IMAGES, rows, N_IMAGES * DIM, NULL),
           MGECL_STATUS_NULL_ARGUMENT);
    EXPECT(mgecl_task_embed_queries(plain, images, 0, rows, N_IMAGES * DIM, NULL),
           MGECL_STATUS_INVALID_ARGUMENT);
    OK(mgecl_task_embed_queries(plain, images, N_IMAGES, rows, N_IMAGES * DIM, NULL));
    CHECK(memcmp(rows, features, sizeof rows) == 0);
    mgecl_task_free(plain);

    options.augmented_copies = 2;
    options.augment_queries = true;
    mgecl_task *augmented = NULL;
    OK(mgecl_task_new(model, &options, &augmented));
    OK(mgecl_task_add_class(augmented, "zero"));
    OK(mgecl_task_add_class(augmented, "two"));
    OK(mgecl_task_add_example(augmented, "zero", &images[0], NULL));
    OK(mgecl_task_add_example(augmented, "two", &images[2], NULL));
    OK(mgecl_task_fit(augmented, NULL));
    OK(mgecl_task_embed_queries(augmented, images, N_IMAGES, rows, N_IMAGES * DIM, NULL));
    CHECK(memcmp(rows, features, sizeof rows) != 0);
    mgecl_prediction batch[N_IMAGES];
    OK(mgecl_task_classify_batch(augmented, images, N_IMAGES, batch, N_IMAGES));
    for (int i = 0; i < N_IMAGES; i++) {
        mgecl_prediction one;
        OK(mgecl_task_classify_feature(augmented, rows + i * DIM, DIM, &one));
        CHECK(one.class_index == batch[i].class_index);
        CHECK(fabs(one.probability - batch[i].probability) < 1e-6);
    }
    mgecl_task_free(augmented);
}

/* Transductive answers: on a one-shot task (0 -> zero, 2 -> two), the batch of all four
 * images refines the prototypes before it is answered. Prints the answers ("transductive:
 * INDEX CLASS PROBABILITY KNOWN"), the CSV of mgecl_task_label_csv ("transductive csv:
 * LINE") and the rows to label next ("transductive next: ROW SCORE") for c_api.rs to compare
 * with the Rust API's; checks here that some probability differs from the inductive answer,
 * that one image or a batch of fewer than 2 images per class gets the inductive answer, and
 * that the label calls agree with each other. */
static void test_transductive(const mgecl_model *model, const float *features) {
    mgecl_task *tasks[2] = {NULL, NULL};
    for (int t = 0; t < 2; t++) {
        mgecl_task_options options = default_options();
        options.transductive = (uint64_t)t;
        OK(mgecl_task_new(model, &options, &tasks[t]));
        mgecl_task_options back = {.struct_size = sizeof back};
        OK(mgecl_task_get_options(tasks[t], &back));
        CHECK(back.transductive == (uint64_t)t);
        OK(mgecl_task_add_class(tasks[t], "zero"));
        OK(mgecl_task_add_class(tasks[t], "two"));
        OK(mgecl_task_add_example_feature(tasks[t], "zero", features, DIM, NULL));
        OK(mgecl_task_add_example_feature(tasks[t], "two", features + 2 * DIM, DIM, NULL));
        OK(mgecl_task_fit(tasks[t], NULL));
    }
    mgecl_task *inductive = tasks[0], *transductive = tasks[1];
    mgecl_image images[N_IMAGES];
    for (int i = 0; i < N_IMAGES; i++) images[i] = mgecl_image_file(image_paths[i]);
    mgecl_prediction alone[N_IMAGES], together[N_IMAGES];
    OK(mgecl_task_classify_batch(inductive, images, N_IMAGES, alone, N_IMAGES));
    OK(mgecl_task_classify_batch(transductive, images, N_IMAGES, together, N_IMAGES));
    int differing = 0;
    for (int i = 0; i < N_IMAGES; i++) {
        printf("transductive: %d %zu %.17g %.17g\n", i, together[i].class_index,
               together[i].probability, together[i].known_probability);
        differing += together[i].probability != alone[i].probability;
        CHECK(together[i].known_probability == alone[i].known_probability);
        /* One image is answered alone. */
        mgecl_prediction one;
        OK(mgecl_task_classify_feature(transductive, features + i * DIM, DIM, &one));
        CHECK(one.class_index == alone[i].class_index && one.probability == alone[i].probability);
    }
    CHECK(differing > 0);
    /* Three images of two classes: fewer than 2 per class, the inductive answers. */
    mgecl_prediction three[3];
    OK(mgecl_task_classify_batch(transductive, images, 3, three, 3));
    for (int i = 0; i < 3; i++)
        CHECK(three[i].class_index == alone[i].class_index &&
              three[i].probability == alone[i].probability);

    /* The CSV of the rows: the same as of the files, and not the inductive one. */
    const char *names[N_IMAGES] = {"0.png", "1.png", "2.png", "3.png"};
    const char *files[N_IMAGES];
    for (int i = 0; i < N_IMAGES; i++) files[i] = image_paths[i];
    static char csv[8192], of_files[8192], of_paths[8192], inductive_csv[8192];
    OK(mgecl_task_label_csv(transductive, features, N_IMAGES, DIM, names, 0.8, 2, csv,
                            sizeof csv, NULL));
    OK(mgecl_task_label_csv(transductive, features, N_IMAGES, DIM, files, 0.8, 2, of_files,
                            sizeof of_files, NULL));
    OK(mgecl_task_label_paths_csv(transductive, files, N_IMAGES, 0.8, 2, of_paths,
                                  sizeof of_paths, NULL));
    CHECK(strcmp(of_files, of_paths) == 0);
    OK(mgecl_task_label_csv(inductive, features, N_IMAGES, DIM, names, 0.8, 2, inductive_csv,
                            sizeof inductive_csv, NULL));
    CHECK(strcmp(csv, inductive_csv) != 0);
    for (char *line = strtok(csv, "\n"); line; line = strtok(NULL, "\n"))
        printf("transductive csv: %s\n", line);
    size_t rows[N_IMAGES], count = 0;
    double scores[N_IMAGES];
    OK(mgecl_task_label_next(transductive, features, N_IMAGES, DIM, N_IMAGES, rows, scores,
                             N_IMAGES, &count));
    CHECK(count == N_IMAGES);
    for (size_t k = 0; k < count; k++)
        printf("transductive next: %zu %.17g\n", rows[k], scores[k]);
    mgecl_task_free(inductive);
    mgecl_task_free(transductive);
}

static void test_model_mismatch(const char *model_path, const char *task_path) {
    mgecl_metadata_entry entry = {"invert", "true"};
    mgecl_load_options options = {.struct_size = sizeof(mgecl_load_options),
                                  .device = "cpu",
                                  .metadata = &entry,
                                  .metadata_len = 1};
    mgecl_model *other = NULL;
    OK(mgecl_model_load(model_path, &options, &other));
    mgecl_task *task = NULL;
    EXPECT(mgecl_task_load(task_path, other, &task), MGECL_STATUS_MODEL_MISMATCH);
    CHECK(task == NULL);
    mgecl_model_free(other);
}

/* ---- One model, many threads ---------------------------------------------------------- */

typedef struct {
    const mgecl_model *model;
    const char *task_path;
    const float *features;
    const answers *expected;
    int iterations;
    int mismatches;
    int errors;
    int own_error_ok;
} worker;

static void *work(void *arg) {
    worker *w = arg;
    /* Each thread has its own task (tasks are one thread at a time), all on one model. */
    mgecl_task *task = NULL;
    if (mgecl_task_load(w->task_path, w->model, &task) != MGECL_STATUS_OK) {
        w->errors++;
        return NULL;
    }
    mgecl_image images[N_IMAGES];
    for (int i = 0; i < N_IMAGES; i++) images[i] = mgecl_image_file(image_paths[i]);
    float features[N_IMAGES * DIM];
    mgecl_prediction batch[N_IMAGES];
    for (int it = 0; it < w->iterations; it++) {
        if (mgecl_model_embed(w->model, images, N_IMAGES, features, N_IMAGES * DIM, NULL))
            w->errors++;
        else if (memcmp(features, w->features, sizeof features) != 0)
            w->mismatches++;
        int i = it % N_IMAGES;
        mgecl_prediction p;
        if (mgecl_task_classify(task, &images[i], &p))
            w->errors++;
        else if (p.class_index != w->expected->class_index[i] ||
                 p.probability != w->expected->probability[i])
            w->mismatches++;
        if (mgecl_task_classify_batch(task, images, N_IMAGES, batch, N_IMAGES))
            w->errors++;
        else
            for (int k = 0; k < N_IMAGES; k++)
                if (batch[k].class_index != w->expected->class_index[k] ||
                    fabs(batch[k].probability - w->expected->probability[k]) > 1e-9)
                    w->mismatches++;
    }
    /* The error message is per thread. */
    char label[64];
    snprintf(label, sizeof label, "missing-%p", (void *)w);
    mgecl_task_remove_class(task, label);
    w->own_error_ok = strstr(mgecl_last_error_message(), label) != NULL;
    mgecl_task_free(task);
    return NULL;
}

static void test_threads(const mgecl_model *model, const char *task_path, const float *features,
                         const answers *expected, int threads, int iterations) {
    pthread_t ids[MAX_THREADS];
    worker workers[MAX_THREADS];
    for (int t = 0; t < threads; t++) {
        workers[t] = (worker){model, task_path, features, expected, iterations, 0, 0, 0};
        CHECK(pthread_create(&ids[t], NULL, work, &workers[t]) == 0);
    }
    int mismatches = 0, errors = 0, own_errors = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(ids[t], NULL);
        mismatches += workers[t].mismatches;
        errors += workers[t].errors;
        own_errors += workers[t].own_error_ok;
    }
    CHECK(errors == 0);
    CHECK(mismatches == 0);
    CHECK(own_errors == threads);
    printf("threads: %d x %d iterations, %d errors, %d results differing from one thread\n",
           threads, iterations, errors, mismatches);
}

/* The structs that grow, as an older header declared them: mgecl_load_options before
 * max_embed_bytes, mgecl_task_options before augment_queries (both appended later). */
typedef struct {
    size_t struct_size;
    const char *device;
    const mgecl_metadata_entry *metadata;
    size_t metadata_len;
    uint32_t max_image_side;
    uint64_t max_image_bytes;
} older_load_options;

typedef struct {
    size_t struct_size;
    uint32_t classifier;
    double alpha;
    uint64_t max_iterations;
    double gradient_tolerance;
    double temperature;
    size_t augmented_copies;
    bool use_threshold;
    double threshold;
    size_t max_classes;
    size_t max_rows;
    bool raw_probabilities;
    uint32_t augmentation;
} older_task_options;

/* mgecl_task_options as the 0.4.0 header declared it: up to augment_queries, without
 * transductive (appended later). */
typedef struct {
    size_t struct_size;
    uint32_t classifier;
    double alpha;
    uint64_t max_iterations;
    double gradient_tolerance;
    double temperature;
    size_t augmented_copies;
    bool use_threshold;
    double threshold;
    size_t max_classes;
    size_t max_rows;
    bool raw_probabilities;
    uint32_t augmentation;
    bool augment_queries;
} task_options_0_4;

/* The same structs as a newer header would declare them: one field more. */
typedef struct {
    mgecl_load_options current;
    uint64_t future_field;
} newer_load_options;
typedef struct {
    mgecl_task_options current;
    uint64_t future_field;
} newer_task_options;
typedef struct {
    mgecl_model_info current;
    uint64_t future_field;
} newer_model_info;
typedef struct {
    mgecl_fit_report current;
    uint64_t future_field;
} newer_fit_report;

/* An older header's structs work, the fields they lack at their defaults, and the library
 * reads and writes nothing past them (they are allocated at exactly their size, so valgrind
 * would see it); a newer header's are refused, and so are sizes no header had. */
static void test_struct_versions(const char *model_path) {
    mgecl_image image = mgecl_image_file(image_paths[0]);
    float out[DIM];
    older_load_options *older_load = calloc(1, sizeof *older_load);
    older_load->struct_size = sizeof *older_load;
    older_load->max_image_side = 16; /* the fixture images are 28x28 */
    mgecl_model *model = NULL;
    OK(mgecl_model_load(model_path, (const mgecl_load_options *)older_load, &model));
    EXPECT(mgecl_model_embed(model, &image, 1, out, DIM, NULL), MGECL_STATUS_LIMIT_EXCEEDED);
    mgecl_model_free(model);
    /* max_embed_bytes, which this header lacks, is at its default of 1 GiB: a 4096x4096
     * input needs more and is refused at load. */
    mgecl_metadata_entry huge = {"image_size", "[4096, 4096]"};
    older_load->max_image_side = 0;
    older_load->metadata = &huge;
    older_load->metadata_len = 1;
    model = NULL;
    EXPECT(mgecl_model_load(model_path, (const mgecl_load_options *)older_load, &model),
           MGECL_STATUS_LIMIT_EXCEEDED);
    CHECK(model == NULL && error_says("over the limit of 1024 MiB"));
    free(older_load);
    OK(mgecl_model_load(model_path, NULL, &model));

    older_task_options *older = malloc(sizeof *older);
    OK(mgecl_task_options_init((mgecl_task_options *)older, sizeof *older));
    CHECK(older->struct_size == sizeof *older && older->alpha == 1.0 &&
          older->classifier == MGECL_CLASSIFIER_PROTOTYPE && older->max_rows == 10000);
    older->classifier = MGECL_CLASSIFIER_LOGISTIC;
    older->augmented_copies = 2;
    mgecl_task *task = NULL;
    OK(mgecl_task_new(model, (const mgecl_task_options *)older, &task));
    mgecl_task_options current = {.struct_size = sizeof current};
    OK(mgecl_task_get_options(task, &current));
    CHECK(current.classifier == MGECL_CLASSIFIER_LOGISTIC && current.augmented_copies == 2 &&
          !current.augment_queries);
    current.temperature = 0.5;
    OK(mgecl_task_set_options(task, &current));
    memset(older, 0xAB, sizeof *older);
    older->struct_size = sizeof *older;
    OK(mgecl_task_get_options(task, (mgecl_task_options *)older));
    CHECK(older->temperature == 0.5 && older->augmented_copies == 2 &&
          older->augmentation == MGECL_AUGMENTATION_ROTATE);
    older->augmented_copies = 1;
    OK(mgecl_task_set_options(task, (const mgecl_task_options *)older));
    OK(mgecl_task_get_options(task, &current));
    CHECK(current.augmented_copies == 1 && !current.augment_queries);
    free(older);

    /* The 0.4.0 layout: transductive, which it lacks, is off, also when it replaces the
     * options of a task that had it on; its struct is written only as far as it reaches. */
    CHECK(sizeof(task_options_0_4) == offsetof(mgecl_task_options, transductive));
    task_options_0_4 *v04 = malloc(sizeof *v04);
    OK(mgecl_task_options_init((mgecl_task_options *)v04, sizeof *v04));
    CHECK(v04->struct_size == sizeof *v04 && !v04->augment_queries);
    mgecl_task *v04_task = NULL;
    OK(mgecl_task_new(model, (const mgecl_task_options *)v04, &v04_task));
    OK(mgecl_task_get_options(v04_task, &current));
    CHECK(current.transductive == 0);
    current.transductive = 1;
    OK(mgecl_task_set_options(v04_task, &current));
    memset(v04, 0xAB, sizeof *v04);
    v04->struct_size = sizeof *v04;
    OK(mgecl_task_get_options(v04_task, (mgecl_task_options *)v04));
    CHECK(v04->max_rows == 10000 && !v04->augment_queries);
    OK(mgecl_task_set_options(v04_task, (const mgecl_task_options *)v04));
    OK(mgecl_task_get_options(v04_task, &current));
    CHECK(current.transductive == 0);
    current.transductive = 2; /* neither 0 nor 1 */
    EXPECT(mgecl_task_set_options(v04_task, &current), MGECL_STATUS_INVALID_ARGUMENT);
    CHECK(error_says("transductive"));
    mgecl_task_free(v04_task);
    free(v04);

    newer_task_options newer;
    EXPECT(mgecl_task_options_init(&newer.current, sizeof newer), MGECL_STATUS_HEADER_TOO_NEW);
    CHECK(error_says("newer mgecl.h"));
    OK(mgecl_task_options_init(&newer.current, sizeof newer.current));
    newer.current.struct_size = sizeof newer;
    newer.future_field = 1;
    mgecl_task *refused = NULL;
    EXPECT(mgecl_task_new(model, &newer.current, &refused), MGECL_STATUS_HEADER_TOO_NEW);
    CHECK(refused == NULL);
    EXPECT(mgecl_task_set_options(task, &newer.current), MGECL_STATUS_HEADER_TOO_NEW);
    EXPECT(mgecl_task_get_options(task, &newer.current), MGECL_STATUS_HEADER_TOO_NEW);
    EXPECT(mgecl_model_task_options(model, &newer.current), MGECL_STATUS_HEADER_TOO_NEW);
    newer_load_options newer_load = {.current = {.struct_size = sizeof newer_load}};
    mgecl_model *other = NULL;
    EXPECT(mgecl_load_options_init(&newer_load.current, sizeof newer_load),
           MGECL_STATUS_HEADER_TOO_NEW);
    EXPECT(mgecl_model_load(model_path, &newer_load.current, &other),
           MGECL_STATUS_HEADER_TOO_NEW);
    CHECK(other == NULL);
    newer_model_info newer_info = {.current = {.struct_size = sizeof newer_info}};
    EXPECT(mgecl_model_describe(model, &newer_info.current), MGECL_STATUS_HEADER_TOO_NEW);
    /* The report's size is checked before fitting: the task is left as it was. */
    OK(mgecl_task_add_class(task, "a"));
    OK(mgecl_task_add_class(task, "b"));
    for (int i = 0; i < DIM; i++) out[i] = (float)(i % 7) - 3.0f;
    OK(mgecl_task_add_example_feature(task, "a", out, DIM, NULL));
    out[0] += 1.0f;
    OK(mgecl_task_add_example_feature(task, "b", out, DIM, NULL));
    newer_fit_report newer_report = {.current = {.struct_size = sizeof newer_report}};
    EXPECT(mgecl_task_fit(task, &newer_report.current), MGECL_STATUS_HEADER_TOO_NEW);
    bool fitted = true;
    OK(mgecl_task_is_fitted(task, &fitted));
    CHECK(!fitted);

    /* Never initialised (struct_size 0), or a size that ends inside a field. */
    mgecl_task_options zero = {0};
    EXPECT(mgecl_task_set_options(task, &zero), MGECL_STATUS_INVALID_ARGUMENT);
    CHECK(error_says("mgecl_task_options_init(&s, sizeof s)"));
    zero.struct_size = sizeof zero - 1;
    EXPECT(mgecl_task_new(model, &zero, &refused), MGECL_STATUS_INVALID_ARGUMENT);
    EXPECT(mgecl_task_options_init(&zero, 3), MGECL_STATUS_INVALID_ARGUMENT);
    mgecl_load_options zero_load = {0};
    EXPECT(mgecl_model_load(model_path, &zero_load, &other), MGECL_STATUS_INVALID_ARGUMENT);
    mgecl_model_info zero_info = {0};
    EXPECT(mgecl_model_describe(model, &zero_info), MGECL_STATUS_INVALID_ARGUMENT);
    mgecl_fit_report zero_report = {0};
    EXPECT(mgecl_task_fit(task, &zero_report), MGECL_STATUS_INVALID_ARGUMENT);
    mgecl_fit_report report = {.struct_size = sizeof report};
    OK(mgecl_task_fit(task, &report));
    CHECK(report.classes == 2 && report.rows == 2);
    mgecl_task_free(task);
    mgecl_model_free(model);
    printf("struct versions: older layouts read with defaults, newer ones refused\n");
}

/* Resource limits: image size on the model, classes and rows on the task. */
static void test_limits(const char *model_path, const float *features) {
    mgecl_load_options load = {.struct_size = sizeof load};
    load.max_image_side = 16; /* the fixture images are 28x28 */
    mgecl_model *small = NULL;
    OK(mgecl_model_load(model_path, &load, &small));
    mgecl_image image = mgecl_image_file(image_paths[0]);
    float out[DIM];
    EXPECT(mgecl_model_embed(small, &image, 1, out, DIM, NULL), MGECL_STATUS_LIMIT_EXCEEDED);
    CHECK(error_says("16"));
    mgecl_model_free(small);
    load.max_image_side = 0;
    load.max_image_bytes = 100; /* fewer bytes than one decoded 28x28 image */
    OK(mgecl_model_load(model_path, &load, &small));
    EXPECT(mgecl_model_embed(small, &image, 1, out, DIM, NULL), MGECL_STATUS_LIMIT_EXCEEDED);
    load.max_image_bytes = 0;
    mgecl_model_free(small);
    load.max_embed_bytes = 1000; /* less than one 28x28 image's activations */
    small = NULL;
    EXPECT(mgecl_model_load(model_path, &load, &small), MGECL_STATUS_LIMIT_EXCEEDED);
    CHECK(small == NULL && error_says("max_embed_bytes"));
    load.max_embed_bytes = 0;

    mgecl_model *model = NULL;
    OK(mgecl_model_load(model_path, NULL, &model));
    mgecl_task_options options = default_options();
    CHECK(options.max_classes == 1000 && options.max_rows == 10000);
    options.max_classes = 1;
    mgecl_task *task = NULL;
    EXPECT(mgecl_task_new(model, &options, &task), MGECL_STATUS_INVALID_ARGUMENT);
    options.max_classes = 2;
    options.max_rows = 3;
    OK(mgecl_task_new(model, &options, &task));
    OK(mgecl_task_add_class(task, "a"));
    OK(mgecl_task_add_class(task, "b"));
    EXPECT(mgecl_task_add_class(task, "c"), MGECL_STATUS_LIMIT_EXCEEDED);
    CHECK(error_says("max_classes"));
    for (int i = 0; i < 3; i++) OK(mgecl_task_add_example_feature(task, "a", features, DIM, NULL));
    EXPECT(mgecl_task_add_example_feature(task, "b", features, DIM, NULL),
           MGECL_STATUS_LIMIT_EXCEEDED);
    CHECK(error_says("max_rows"));
    options.max_rows = 2; /* below what the task holds: refused, the old options stay */
    EXPECT(mgecl_task_set_options(task, &options), MGECL_STATUS_LIMIT_EXCEEDED);
    mgecl_task_options current = {.struct_size = sizeof current};
    OK(mgecl_task_get_options(task, &current));
    CHECK(current.max_rows == 3);
    mgecl_task_free(task);
    mgecl_model_free(model);
    printf("limits: image side, image bytes, embed bytes, classes, rows enforced\n");
}

#ifdef MGECL_TEST_HOOKS
static void test_panic(const mgecl_model *model, const float *features) {
    EXPECT(mgecl_test_panic("forced by capi_test"), MGECL_STATUS_PANIC);
    CHECK(error_says("forced by capi_test"));
    EXPECT(mgecl_test_panic(NULL), MGECL_STATUS_PANIC);
    /* The library goes on working after a caught panic. */
    mgecl_image image = mgecl_image_file(image_paths[1]);
    float out[DIM];
    OK(mgecl_model_embed(model, &image, 1, out, DIM, NULL));
    CHECK(memcmp(out, features + DIM, sizeof out) == 0);
    printf("panic: caught as MGECL_STATUS_PANIC\n");
}
#endif

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL IMAGE_DIR TMP_DIR\n", argv[0]);
        return 2;
    }
    const char *env_threads = getenv("MGECL_TEST_THREADS");
    const char *env_iterations = getenv("MGECL_TEST_ITERATIONS");
    int threads = env_threads ? atoi(env_threads) : 8;
    int iterations = env_iterations ? atoi(env_iterations) : 10;
    if (threads < 1 || threads > MAX_THREADS || iterations < 1) {
        fprintf(stderr, "bad MGECL_TEST_THREADS / MGECL_TEST_ITERATIONS\n");
        return 2;
    }
    for (int i = 0; i < N_IMAGES; i++)
        snprintf(image_paths[i], sizeof image_paths[i], "%s/%d.png", argv[2], i);
    char task_path[4096];
    snprintf(task_path, sizeof task_path, "%s/capi_test_task.safetensors", argv[3]);

    test_library();
    mgecl_model *model = test_model_loading(argv[1]);
    float features[N_IMAGES * DIM];
    test_embedding(model, features);
    answers expected;
    mgecl_task *task = test_task(model, features, &expected, task_path);
    test_model_mismatch(argv[1], task_path);
    test_embed_queries(model, features);
    test_add_folder(model, argv[3]);
    test_transductive(model, features);
    test_model_task_options(argv[1], model);
    /* The task keeps the model alive: free the model handle first. */
    mgecl_model *second = NULL;
    OK(mgecl_model_load(argv[1], NULL, &second));
    mgecl_task *orphan = NULL;
    OK(mgecl_task_load(task_path, second, &orphan));
    mgecl_model_free(second);
    mgecl_prediction prediction;
    mgecl_image image = mgecl_image_file(image_paths[0]);
    OK(mgecl_task_classify(orphan, &image, &prediction));
    CHECK(prediction.class_index == expected.class_index[0]);
    mgecl_task_free(orphan);

    test_limits(argv[1], features);
    test_struct_versions(argv[1]);
    test_threads(model, task_path, features, &expected, threads, iterations);
#ifdef MGECL_TEST_HOOKS
    test_panic(model, features);
#else
    printf("panic: test hook not built in\n");
#endif
    mgecl_task_free(task);
    mgecl_model_free(model);
    remove(task_path);
    printf("capi_test: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
