/*
 * standalone.h - the replay driver of the fuzz harnesses, for builds without
 * libFuzzer (-DSESAME_FUZZ_STANDALONE, as make check builds them under the
 * sanitizers): runs LLVMFuzzerTestOneInput over every file named on the
 * command line (directories are walked one level), or over
 * $SESAME_SRCDIR/tests/fuzz/corpus/SESAME_FUZZ_CORPUS. Exit status 0 when
 * every input ran and passed the harness's check.
 *
 * Include it at the end of a harness after defining:
 *   SESAME_FUZZ_CORPUS        the corpus folder name, e.g. "http";
 *   SESAME_FUZZ_BEFORE()      (optional) run before each input;
 *   SESAME_FUZZ_AFTER(path)   (optional) an int expression, 0 when the input
 *                             passed the harness's own check.
 */
#ifndef SESAME_FUZZ_STANDALONE_H
#define SESAME_FUZZ_STANDALONE_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef SESAME_FUZZ_BEFORE
#define SESAME_FUZZ_BEFORE() ((void)0)
#endif
#ifndef SESAME_FUZZ_AFTER
#define SESAME_FUZZ_AFTER(path) ((void)(path), 0)
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_INPUT (1 << 20)

static int
run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "%s: cannot open\n", path);
        return -1;
    }
    uint8_t *data = malloc(FUZZ_MAX_INPUT);
    if (data == NULL) {
        fclose(f);
        return -1;
    }
    size_t n = fread(data, 1, FUZZ_MAX_INPUT, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        fprintf(stderr, "%s: read error\n", path);
        free(data);
        return -1;
    }
    SESAME_FUZZ_BEFORE();
    LLVMFuzzerTestOneInput(data, n);
    free(data);
    return SESAME_FUZZ_AFTER(path);
}

static int
run_path(const char *path, size_t *count)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "%s: not found\n", path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        (*count)++;
        return run_file(path);
    }
    DIR *d = opendir(path);
    if (d == NULL) {
        fprintf(stderr, "%s: cannot open directory\n", path);
        return -1;
    }
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        size_t n = strlen(path) + strlen(e->d_name) + 2;
        char *p = malloc(n);
        if (p == NULL)
            abort();
        snprintf(p, n, "%s/%s", path, e->d_name);
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            (*count)++;
            if (run_file(p) != 0)
                rc = -1;
        }
        free(p);
    }
    closedir(d);
    return rc;
}

int
main(int argc, char **argv)
{
    size_t count = 0;
    int rc = 0;
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            if (run_path(argv[i], &count) != 0)
                rc = 1;
    } else {
        const char *src = getenv("SESAME_SRCDIR");
        size_t n = strlen(src != NULL ? src : ".") + 64;
        char *p = malloc(n);
        if (p == NULL)
            abort();
        snprintf(p, n, "%s/tests/fuzz/corpus/%s", src != NULL ? src : ".", SESAME_FUZZ_CORPUS);
        if (run_path(p, &count) != 0)
            rc = 1;
        free(p);
    }
    if (count == 0) {
        fprintf(stderr, "no input\n");
        rc = 1;
    }
    printf("%zu inputs run\n", count);
    return rc;
}

#endif
