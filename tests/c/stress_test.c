/*
 * Stress test of the C ABI: one model shared by THREADS threads, each with its own tasks doing
 * the whole task life cycle in a loop (new task, add classes, add examples from image files,
 * fit, classify, save, load, classify again, free) for a bounded time. Every answer must equal
 * the single-threaded answer of the same cycle, bit for bit. All threads also save to and load
 * from one shared file, which must always load as a whole task from one of the cycles.
 * Run under valgrind or LeakSanitizer (as .ci/run does) it also shows the cycle leaks nothing.
 *
 * usage: stress_test MODEL IMAGE_DIR TMP_DIR
 * env:   MGECL_STRESS_THREADS (default 8), MGECL_STRESS_SECONDS (default 5),
 *        MGECL_STRESS_MIN_CYCLES (per thread, default 2)
 *
 * Prints "stress: T threads, N cycles, E errors, M mismatches" and exits 0 only when both
 * are 0.
 */
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mgecl.h"

#define N_IMAGES 4
#define MAX_THREADS 64
#define VARIANTS 2

static char image_paths[N_IMAGES][4096];
static const char *labels[N_IMAGES] = {"zero", "zero", "two", "two"};
static char shared_path[4096];

/* What one cycle answers: the fit report, then per image the class and probability, before
 * and after a save/load round trip. */
typedef struct {
    mgecl_fit_report report;
    size_t class_index[2][N_IMAGES];
    double probability[2][N_IMAGES];
} answers;

static answers expected[VARIANTS];

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Classifies every image with `task` into row `row` of `out`; returns a status. */
static mgecl_status classify_all(const mgecl_task *task, answers *out, int row) {
    for (int i = 0; i < N_IMAGES; i++) {
        mgecl_image image = mgecl_image_file(image_paths[i]);
        mgecl_prediction p;
        mgecl_status s = mgecl_task_classify(task, &image, &p);
        if (s != MGECL_STATUS_OK) return s;
        out->class_index[row][i] = p.class_index;
        out->probability[row][i] = p.probability;
    }
    return MGECL_STATUS_OK;
}

/* One life cycle of a task of variant `variant` (0: logistic, 1: prototype with one example
 * less), saved to and reloaded from `path`. Returns a status; `*out` holds the answers. */
static mgecl_status cycle(const mgecl_model *model, int variant, const char *path,
                          answers *out) {
    mgecl_task_options options;
    mgecl_status s = mgecl_task_options_init(&options, sizeof options);
    if (s) return s;
    options.classifier = variant == 0 ? MGECL_CLASSIFIER_LOGISTIC : MGECL_CLASSIFIER_PROTOTYPE;
    mgecl_task *task = NULL;
    mgecl_task *loaded = NULL;
    s = mgecl_task_new(model, &options, &task);
    if (s) return s;
    if ((s = mgecl_task_add_class(task, "zero")) || (s = mgecl_task_add_class(task, "two")))
        goto done;
    for (int i = 0; i < N_IMAGES - variant; i++) {
        mgecl_image image = mgecl_image_file(image_paths[i]);
        if ((s = mgecl_task_add_example(task, labels[i], &image, NULL))) goto done;
    }
    out->report.struct_size = sizeof out->report;
    if ((s = mgecl_task_fit(task, &out->report)) || (s = classify_all(task, out, 0)) ||
        (s = mgecl_task_save(task, path)) || (s = mgecl_task_load(path, model, &loaded)))
        goto done;
    s = classify_all(loaded, out, 1);
done:
    mgecl_task_free(loaded);
    mgecl_task_free(task);
    return s;
}

static int same(const answers *a, const answers *b) {
    return a->report.classifier == b->report.classifier &&
           a->report.converged == b->report.converged &&
           a->report.gradient_max_abs == b->report.gradient_max_abs &&
           a->report.rows == b->report.rows && a->report.classes == b->report.classes &&
           memcmp(a->class_index, b->class_index, sizeof a->class_index) == 0 &&
           memcmp(a->probability, b->probability, sizeof a->probability) == 0;
}

typedef struct {
    const mgecl_model *model;
    int index;
    double deadline;
    int min_cycles;
    int cycles, errors, mismatches;
} worker;

static void *work(void *arg) {
    worker *w = arg;
    char path[4200];
    snprintf(path, sizeof path, "%s.thread%d", shared_path, w->index);
    for (int it = 0; it < w->min_cycles || now() < w->deadline; it++) {
        int variant = (it + w->index) % VARIANTS;
        answers got;
        if (cycle(w->model, variant, path, &got) != MGECL_STATUS_OK) {
            fprintf(stderr, "thread %d: %s\n", w->index, mgecl_last_error_message());
            w->errors++;
        } else if (!same(&got, &expected[variant])) {
            w->mismatches++;
        }
        /* The shared file: every writer's save is whole, so it loads as one of the variants. */
        mgecl_task *task = NULL;
        if (mgecl_task_load(path, w->model, &task) != MGECL_STATUS_OK ||
            mgecl_task_save(task, shared_path) != MGECL_STATUS_OK) {
            w->errors++;
        }
        mgecl_task_free(task);
        task = NULL;
        if (mgecl_task_load(shared_path, w->model, &task) != MGECL_STATUS_OK) {
            fprintf(stderr, "thread %d: shared file: %s\n", w->index, mgecl_last_error_message());
            w->errors++;
        } else {
            answers shared;
            if (classify_all(task, &shared, 1) != MGECL_STATUS_OK) {
                w->errors++;
            } else {
                int found = 0;
                for (int v = 0; v < VARIANTS; v++)
                    found |= memcmp(shared.class_index[1], expected[v].class_index[1],
                                    sizeof shared.class_index[1]) == 0 &&
                             memcmp(shared.probability[1], expected[v].probability[1],
                                    sizeof shared.probability[1]) == 0;
                if (!found) w->mismatches++;
            }
        }
        mgecl_task_free(task);
        w->cycles++;
    }
    remove(path);
    return NULL;
}

static int env_int(const char *name, int fallback) {
    const char *text = getenv(name);
    return text ? atoi(text) : fallback;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL IMAGE_DIR TMP_DIR\n", argv[0]);
        return 2;
    }
    int threads = env_int("MGECL_STRESS_THREADS", 8);
    int seconds = env_int("MGECL_STRESS_SECONDS", 5);
    int min_cycles = env_int("MGECL_STRESS_MIN_CYCLES", 2);
    if (threads < 1 || threads > MAX_THREADS || seconds < 0 || min_cycles < 1) {
        fprintf(stderr, "bad MGECL_STRESS_THREADS / _SECONDS / _MIN_CYCLES\n");
        return 2;
    }
    for (int i = 0; i < N_IMAGES; i++)
        snprintf(image_paths[i], sizeof image_paths[i], "%s/%d.png", argv[2], i);
    snprintf(shared_path, sizeof shared_path, "%s/stress_shared.task", argv[3]);

    mgecl_model *model = NULL;
    if (mgecl_model_load(argv[1], NULL, &model) != MGECL_STATUS_OK) {
        fprintf(stderr, "cannot load %s: %s\n", argv[1], mgecl_last_error_message());
        return 1;
    }
    /* The single-threaded answers, one per variant. */
    char path[4200];
    snprintf(path, sizeof path, "%s.reference", shared_path);
    for (int v = 0; v < VARIANTS; v++) {
        if (cycle(model, v, path, &expected[v]) != MGECL_STATUS_OK) {
            fprintf(stderr, "reference cycle %d: %s\n", v, mgecl_last_error_message());
            return 1;
        }
    }
    remove(path);
    if (same(&expected[0], &expected[1])) {
        fprintf(stderr, "the two variants must answer differently\n");
        return 1;
    }

    pthread_t ids[MAX_THREADS];
    worker workers[MAX_THREADS];
    double deadline = now() + seconds;
    for (int t = 0; t < threads; t++) {
        workers[t] = (worker){model, t, deadline, min_cycles, 0, 0, 0};
        if (pthread_create(&ids[t], NULL, work, &workers[t]) != 0) {
            fprintf(stderr, "cannot start thread %d\n", t);
            return 1;
        }
    }
    int cycles = 0, errors = 0, mismatches = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(ids[t], NULL);
        cycles += workers[t].cycles;
        errors += workers[t].errors;
        mismatches += workers[t].mismatches;
    }
    mgecl_model_free(model);
    remove(shared_path);
    printf("stress: %d threads, %d cycles, %d errors, %d mismatches\n", threads, cycles, errors,
           mismatches);
    return errors == 0 && mismatches == 0 ? 0 : 1;
}
