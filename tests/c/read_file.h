/* The C test programs' file reader, included by capi_test.c and abi_sequence.c. */
#ifndef MGECL_TEST_READ_FILE_H
#define MGECL_TEST_READ_FILE_H

#include <stdio.h>
#include <stdlib.h>

/* The whole file at `path` (malloc'd, the caller frees it) and its length in `*len`; NULL when
 * it cannot be opened. */
static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *data = malloc(size > 0 ? (size_t)size : 1);
    *len = fread(data, 1, (size_t)size, f);
    fclose(f);
    return data;
}

#endif
