/*
 * Few-shot classification from C: load a model, register labelled images, fit, classify.
 *
 *   classify MODEL LABEL=IMAGE [LABEL=IMAGE ...] -- QUERY [QUERY ...]
 *
 * Build (see docs/c-abi.md):
 *   cc -std=c11 -Iinclude examples/c/classify.c -Ltarget/release -lmgecl \
 *      -Wl,-rpath,$PWD/target/release -o classify
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mgecl.h"

/* Prints the failed call's status and message, and exits. */
static void check(mgecl_status status, const char *what) {
    if (status != MGECL_STATUS_OK) {
        fprintf(stderr, "%s failed: %s: %s\n", what, mgecl_status_name(status),
                mgecl_last_error_message());
        exit(1);
    }
}

int main(int argc, char **argv) {
    int split = 0;
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--") == 0) split = i;
    if (argc < 5 || split < 3 || split == argc - 1) {
        fprintf(stderr, "usage: %s MODEL LABEL=IMAGE... -- QUERY...\n", argv[0]);
        return 2;
    }

    mgecl_model *model = NULL;
    check(mgecl_model_load(argv[1], NULL, &model), "mgecl_model_load");
    /* Structs that may grow carry their size, so that a newer library reads them right. */
    mgecl_model_info info = {.struct_size = sizeof info};
    check(mgecl_model_describe(model, &info), "mgecl_model_describe");
    printf("mgecl %s, model %s, %zux%zu input, %zu-d features\n", mgecl_version(), info.arch,
           info.image_height, info.image_width, info.feature_dim);

    mgecl_task_options options;
    check(mgecl_task_options_init(&options, sizeof options), "mgecl_task_options_init");
    mgecl_task *task = NULL;
    check(mgecl_task_new(model, &options, &task), "mgecl_task_new");
    for (int i = 2; i < split; i++) {
        char *label = argv[i];
        char *eq = strchr(label, '=');
        if (!eq) {
            fprintf(stderr, "expected LABEL=IMAGE, got %s\n", label);
            return 2;
        }
        *eq = '\0';
        mgecl_status status = mgecl_task_add_class(task, label);
        if (status != MGECL_STATUS_DUPLICATE_LABEL) check(status, "mgecl_task_add_class");
        mgecl_image image = mgecl_image_file(eq + 1);
        uint64_t id = 0;
        check(mgecl_task_add_example(task, label, &image, &id), "mgecl_task_add_example");
        printf("example %llu: %s = %s\n", (unsigned long long)id, label, eq + 1);
    }

    mgecl_fit_report report = {.struct_size = sizeof report};
    check(mgecl_task_fit(task, &report), "mgecl_task_fit");
    printf("fitted %zu classes on %zu examples (converged: %s)\n", report.classes, report.rows,
           report.converged ? "yes" : "no");

    for (int i = split + 1; i < argc; i++) {
        mgecl_image image = mgecl_image_file(argv[i]);
        size_t index[2];
        double probability[2];
        size_t n = 0;
        check(mgecl_task_classify_top_k(task, &image, 2, index, probability, &n),
              "mgecl_task_classify_top_k");
        printf("%s:", argv[i]);
        for (size_t k = 0; k < n; k++) {
            const char *label = NULL;
            check(mgecl_task_class_label(task, index[k], &label), "mgecl_task_class_label");
            printf(" %s %.3f", label, probability[k]);
        }
        printf("\n");
    }

    mgecl_task_free(task);
    mgecl_model_free(model);
    return 0;
}
