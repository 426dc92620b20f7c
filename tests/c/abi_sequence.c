/*
 * Random sequences of C-ABI calls, the way an app misuses a library: tasks created and freed
 * in any order, classes and examples added and removed, fits, classifications, options with
 * arbitrary values, NULL pointers, too-small buffers, huge counts (with NULL arrays), bad
 * UTF-8, undecodable images, save and reload. Within the header's contract (arrays as long as
 * the lengths passed; freed handles are never used again), every call must return a status
 * other than MGECL_STATUS_PANIC, and a saved task must load back and classify as before.
 *
 * The input bytes are the program: each step reads an operation and its arguments from them.
 *
 * Two builds of this one file:
 * - libFuzzer (`-fsanitize=fuzzer`, against a libmgecl.a built with coverage counters): see
 *   fuzz/README.md. Environment: MGECL_FUZZ_DATA (default tests/data), MGECL_FUZZ_TMP (default
 *   /tmp).
 * - -DMGECL_ABI_REPLAY: `abi_sequence DATA_DIR TMP_DIR INPUT...` runs each input file once
 *   (the corpus replay of bindings/c/tests/c_api.rs) and exits 0 when all pass.
 * A failed check prints the call and aborts.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mgecl.h"
#include "read_file.h"

#define SLOTS 3
#define MAX_IDS 64
#define N_PNG 4

static mgecl_model *model;
static size_t dim;
static unsigned char *png[N_PNG];
static size_t png_len[N_PNG];
static char png_path[N_PNG][4096];
static char save_path[4096];

static void fail(const char *what, mgecl_status status) {
    fprintf(stderr, "abi_sequence: %s returned %d (%s): %s\n", what, (int)status,
            mgecl_status_name(status), mgecl_last_error_message());
    abort();
}

/* Every call returns a status of the header's enum, never a caught panic. */
static unsigned long calls, calls_ok, round_trips;

static mgecl_status checked(mgecl_status status, const char *what) {
    int known = ((int)status >= 0 && (int)status <= MGECL_STATUS_BACKEND) ||
                status == MGECL_STATUS_HEADER_TOO_NEW;
    if (!known) fail(what, status);
    calls++;
    calls_ok += status == MGECL_STATUS_OK;
    return status;
}
#define CALL(expr) checked((expr), #expr)

#define REQUIRE(cond, what)                                                                \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "abi_sequence: %s\n", what);                                   \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

/* The program: bytes read in order; zeros once they run out. */
typedef struct {
    const uint8_t *data;
    size_t len, at;
} program;

static uint8_t byte(program *p) { return p->at < p->len ? p->data[p->at++] : 0; }
static uint32_t u32(program *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v = v << 8 | byte(p);
    return v;
}
static double number(program *p) {
    /* Sensible values most of the time, the edges (NaN, inf, negative, huge) otherwise. */
    static const double edges[] = {0.0, -1.0, 1e300, -1e-300, 0.5, 2.0};
    uint8_t k = byte(p);
    if (k < 200) return k / 100.0;
    if (k < 250) return edges[k % 6];
    return k % 2 ? (double)NAN : (double)INFINITY;
}

static void setup(const char *data_dir, const char *tmp_dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/conv4_gray.safetensors", data_dir);
    mgecl_status s = mgecl_model_load(path, NULL, &model);
    if (s != MGECL_STATUS_OK) fail("loading the fixture model", s);
    mgecl_model_info info = {.struct_size = sizeof info};
    mgecl_model_describe(model, &info);
    dim = info.feature_dim;
    for (int i = 0; i < N_PNG; i++) {
        snprintf(png_path[i], sizeof png_path[i], "%s/conv4_gray_inputs/%d.png", data_dir, i);
        png[i] = read_file(png_path[i], &png_len[i]);
        REQUIRE(png[i] != NULL, "cannot read the fixture images");
    }
    snprintf(save_path, sizeof save_path, "%s/abi_sequence_%d.task", tmp_dir, (int)getpid());
}

/* Labels: valid ones, an empty one, bad UTF-8, a control character, NULL. */
static const char *label(program *p) {
    static const char bad_utf8[] = {'x', (char)0xC3, (char)0x28, 0};
    static const char *labels[] = {"a", "b", "c", "d", "", bad_utf8, "e\n", NULL};
    return labels[byte(p) % 8];
}

/* An image description; `pixels` is scratch of at least 64 x 64 bytes for raw pixels. */
static mgecl_image image(program *p, const uint8_t *input, size_t input_len, uint8_t *pixels) {
    uint8_t which = byte(p) % 8;
    uint8_t i = byte(p) % N_PNG;
    switch (which) {
    case 0:
    case 1:
        return mgecl_image_file(png_path[i]);
    case 2:
        return mgecl_image_encoded(png[i], png_len[i]);
    case 3: /* truncated PNG */
        return mgecl_image_encoded(png[i], png_len[i] / 2);
    case 4: /* the program's own bytes as an image file */
        return mgecl_image_encoded(input, input_len);
    case 5: { /* raw gray pixels of a fuzzed geometry inside the scratch */
        uint32_t w = byte(p) % 65, h = byte(p) % 65;
        size_t stride = w + byte(p) % 4;
        for (size_t k = 0; k < 64 * 64; k++) pixels[k] = (uint8_t)(k * 7 + byte(p));
        size_t len = h ? stride * (h - 1) + w : 0;
        return mgecl_image_pixels(pixels, len <= 64 * 64 ? len : 0, w, h, stride,
                                  MGECL_PIXEL_FORMAT_GRAY8);
    }
    case 6:
        return mgecl_image_file("/nonexistent/mgecl.png");
    default:
        return mgecl_image_encoded(NULL, byte(p));
    }
}

static mgecl_task_options options(program *p) {
    mgecl_task_options o;
    mgecl_task_options_init(&o, sizeof o);
    uint8_t fields = byte(p);
    if (fields & 1) o.classifier = byte(p) % 3;
    if (fields & 2) o.alpha = number(p);
    if (fields & 4) o.temperature = number(p);
    if (fields & 8) o.augmented_copies = byte(p) % 6;
    if (fields & 16) {
        o.use_threshold = byte(p) % 2;
        o.threshold = number(p);
    }
    if (fields & 32) o.max_classes = byte(p) % 8;
    if (fields & 64) o.max_rows = byte(p) % 32;
    if (fields & 128) {
        o.augmentation = byte(p) % 3;
        o.augment_queries = byte(p) % 2;
        o.transductive = byte(p) % 3; /* 2: not a boolean, refused */
        o.raw_probabilities = byte(p) % 2;
        o.max_iterations = byte(p);
        o.gradient_tolerance = number(p);
    }
    if ((fields & 129) == 129) { /* older headers' sizes, a newer one's, none, a bad one */
        const size_t sizes[] = {sizeof o,
                                offsetof(mgecl_task_options, augment_queries),
                                offsetof(mgecl_task_options, transductive),
                                sizeof o + 8,
                                0,
                                12};
        o.struct_size = sizes[byte(p) % 6];
    }
    return o;
}

typedef struct {
    mgecl_task *task;
    uint64_t ids[MAX_IDS];
    size_t n_ids;
} slot;

/* Save, load, and classify the same image with both: the same answer. */
static void round_trip(mgecl_task *task) {
    mgecl_prediction before, after;
    mgecl_image probe = mgecl_image_encoded(png[1], png_len[1]);
    if (CALL(mgecl_task_classify(task, &probe, &before)) != MGECL_STATUS_OK) return;
    if (CALL(mgecl_task_save(task, save_path)) != MGECL_STATUS_OK) return;
    mgecl_task *loaded = NULL;
    mgecl_status s = CALL(mgecl_task_load(save_path, model, &loaded));
    if (s != MGECL_STATUS_OK) fail("loading a task just saved", s);
    s = CALL(mgecl_task_classify(loaded, &probe, &after));
    if (s != MGECL_STATUS_OK) fail("classifying with a reloaded task", s);
    REQUIRE(before.class_index == after.class_index && before.probability == after.probability &&
                before.known_probability == after.known_probability,
            "a reloaded task answers differently");
    REQUIRE((before.label == NULL) == (after.label == NULL) &&
                (before.label == NULL || strcmp(before.label, after.label) == 0),
            "a reloaded task names another label");
    mgecl_task_free(loaded);
    unlink(save_path);
    round_trips++;
}

static void run(const uint8_t *input, size_t len) {
    slot slots[SLOTS] = {0};
    program p = {input, len, 0};
    uint8_t pixels[64 * 64];
    float floats[4 * 256];
    for (int step = 0; step < 64 && p.at < p.len; step++) {
        slot *sl = &slots[byte(&p) % SLOTS];
        mgecl_task *t = sl->task; /* may be NULL: every call must say so */
        uint8_t op = byte(&p) % 20;
        switch (op) {
        case 0: { /* create (replacing what the slot held) */
            mgecl_task_free(sl->task);
            sl->task = NULL;
            sl->n_ids = 0;
            uint8_t how = byte(&p) % 3;
            mgecl_task_options o = options(&p);
            CALL(mgecl_task_new(model, how == 0 ? NULL : &o, &sl->task));
            break;
        }
        case 1:
            mgecl_task_free(sl->task);
            sl->task = NULL;
            sl->n_ids = 0;
            break;
        case 2:
            CALL(mgecl_task_add_class(t, label(&p)));
            break;
        case 3:
            CALL(mgecl_task_remove_class(t, label(&p)));
            break;
        case 4:
        case 5: {
            mgecl_image im = image(&p, input, len, pixels);
            uint64_t id = 0;
            const char *l = label(&p);
            if (CALL(mgecl_task_add_example(t, l, &im, &id)) == MGECL_STATUS_OK &&
                sl->n_ids < MAX_IDS)
                sl->ids[sl->n_ids++] = id;
            break;
        }
        case 6: { /* a feature of a fuzzed length (up to 4 rows), maybe not finite */
            size_t n = byte(&p) % 5 * dim + (byte(&p) % 4 == 0 ? byte(&p) % 3 : 0);
            if (n > sizeof floats / sizeof floats[0]) n = 0;
            for (size_t k = 0; k < n; k++) floats[k] = (float)number(&p) - 1.0f;
            uint64_t id = 0;
            if (CALL(mgecl_task_add_example_feature(t, label(&p), n ? floats : NULL, n, &id)) ==
                    MGECL_STATUS_OK &&
                sl->n_ids < MAX_IDS)
                sl->ids[sl->n_ids++] = id;
            break;
        }
        case 7: {
            uint8_t k = byte(&p);
            uint64_t id = sl->n_ids && k < 200 ? sl->ids[k % sl->n_ids] : k;
            CALL(mgecl_task_remove_example(t, id));
            break;
        }
        case 8: {
            mgecl_fit_report report = {.struct_size = sizeof report};
            CALL(mgecl_task_fit(t, byte(&p) % 2 ? &report : NULL));
            break;
        }
        case 9: {
            mgecl_image im = image(&p, input, len, pixels);
            mgecl_prediction pred;
            CALL(mgecl_task_classify(t, byte(&p) % 8 ? &im : NULL, byte(&p) % 8 ? &pred : NULL));
            break;
        }
        case 10: { /* a batch, its output maybe short; a huge count only with NULL arrays */
            mgecl_image ims[4];
            mgecl_prediction preds[4];
            size_t n = byte(&p) % 5;
            for (size_t k = 0; k < n; k++) ims[k] = image(&p, input, len, pixels);
            if (byte(&p) % 8 == 0)
                CALL(mgecl_task_classify_batch(t, NULL, SIZE_MAX, NULL, SIZE_MAX));
            else
                CALL(mgecl_task_classify_batch(t, ims, n, preds, byte(&p) % 5 % (n + 1)));
            break;
        }
        case 11: {
            mgecl_image im = image(&p, input, len, pixels);
            size_t indices[8], count = 0;
            double probs[8];
            size_t k = byte(&p) % 10;
            CALL(mgecl_task_classify_top_k(t, &im, k > 8 ? 8 : k, indices, probs, &count));
            break;
        }
        case 12: {
            mgecl_task_options o = options(&p);
            CALL(mgecl_task_set_options(t, byte(&p) % 8 ? &o : NULL));
            break;
        }
        case 13: {
            mgecl_task_options o = {.struct_size = sizeof o};
            CALL(mgecl_task_get_options(t, byte(&p) % 8 ? &o : NULL));
            break;
        }
        case 14:
            if (t) round_trip(t);
            break;
        case 15: { /* class listing with fuzzed indices and buffer sizes */
            size_t count = 0, index = byte(&p) % 6, needed = 0;
            const char *out_label = NULL;
            uint64_t ids[4];
            CALL(mgecl_task_class_count(t, &count));
            CALL(mgecl_task_class_label(t, index, &out_label));
            CALL(mgecl_task_class_examples(t, index, ids, byte(&p) % 5, &needed));
            CALL(mgecl_task_class_examples(t, index, NULL, 0, &needed));
            break;
        }
        case 16: { /* model embedding into a buffer maybe too short */
            mgecl_image ims[2] = {image(&p, input, len, pixels), image(&p, input, len, pixels)};
            size_t n = byte(&p) % 3, needed = 0;
            CALL(mgecl_model_embed(model, ims, n, floats, byte(&p) % 3 * dim, &needed));
            break;
        }
        case 17: {
            mgecl_image im = image(&p, input, len, pixels);
            size_t needed = 0;
            CALL(mgecl_task_embed_queries(t, &im, 1, floats, byte(&p) % 2 * dim, &needed));
            break;
        }
        case 18: { /* a feature of a fuzzed length straight to the classifier */
            size_t n = byte(&p) % 2 ? dim : byte(&p);
            for (size_t k = 0; k < n; k++) floats[k] = (float)number(&p);
            mgecl_prediction pred;
            CALL(mgecl_task_classify_feature(t, floats, n, &pred));
            break;
        }
        default: { /* a task file made of the program's own bytes; the buffers released */
            mgecl_task *loaded = NULL;
            size_t at = p.at < p.len ? p.at : 0;
            if (CALL(mgecl_task_load_bytes(input + at, len - at, model, &loaded)) ==
                MGECL_STATUS_OK)
                mgecl_task_free(loaded);
            CALL(mgecl_release_buffers());
            (void)u32(&p);
            break;
        }
        }
    }
    for (int i = 0; i < SLOTS; i++) mgecl_task_free(slots[i].task);
}

#ifdef MGECL_ABI_REPLAY
int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: abi_sequence DATA_DIR TMP_DIR INPUT...\n");
        return 2;
    }
    setup(argv[1], argv[2]);
    for (int i = 3; i < argc; i++) {
        size_t len = 0;
        unsigned char *input = read_file(argv[i], &len);
        REQUIRE(input != NULL, "cannot read an input");
        run(input, len);
        free(input);
    }
    printf("abi_sequence: %d inputs replayed, %lu calls (%lu OK), %lu save/load round trips\n",
           argc - 3, calls, calls_ok, round_trips);
    mgecl_model_free(model);
    return 0;
}
#else
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *data = getenv("MGECL_FUZZ_DATA");
    const char *tmp = getenv("MGECL_FUZZ_TMP");
    setup(data ? data : "tests/data", tmp ? tmp : "/tmp");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    run(data, size);
    return 0;
}
#endif
