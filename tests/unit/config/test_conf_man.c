/*
 * test_conf_man.c - doc/man/sesame.conf.5 documents exactly the keys the
 * loader knows (sesame_conf_known_keys()), and its key reference is what
 * scripts/gen-conf-man generates from conf/sesame.conf.example, the
 * defaults of gateway/config/config.c and doc/man/conf-keys.txt. The man
 * pages pass mandoc -Tlint without warnings (when mandoc is installed).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"

#define REGENERATE "run scripts/gen-conf-man (it rewrites the key reference of doc/man/sesame.conf.5)"

static const char *
srcdir(void)
{
    const char *s = getenv("SESAME_SRCDIR");
    return s ? s : ".";
}

/* "section.key\n" for every ".It Ic key" of the key reference, under its
 * ".Ss [section]" or ".Ss [kind NAME]" heading. Plugin options are written
 * ".It Cm" and are not keys of the loader. */
static char *
man_keys(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "cannot open %s\n", path);
        fail();
    }
    char line[4096], section[64] = "";
    size_t cap = 65536, len = 0;
    char *out = calloc(1, cap);
    bool in_keys = false;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, ".\\\" BEGIN KEYS", 14) == 0) {
            in_keys = true;
            continue;
        }
        if (strncmp(line, ".\\\" END KEYS", 12) == 0)
            in_keys = false;
        if (!in_keys)
            continue;
        if (strncmp(line, ".Ss [", 5) == 0) {
            if (sscanf(line + 5, "%63[a-z]", section) != 1)
                section[0] = '\0';
            continue;
        }
        char key[64];
        if (strncmp(line, ".It Ic ", 7) == 0 && sscanf(line + 7, "%63[a-z0-9_]", key) == 1) {
            if (section[0] == '\0') {
                fprintf(stderr, "%s: key %s outside a section heading\n", path, key);
                fail();
            }
            char entry[160];
            snprintf(entry, sizeof(entry), "%s.%s\n", section, key);
            assert_true(len + strlen(entry) < cap);
            strcpy(out + len, entry);
            len += strlen(entry);
        }
    }
    fclose(f);
    return out;
}

/* How many lines of `list` are exactly `line`. */
static int
count_lines(const char *list, const char *line)
{
    size_t n = strlen(line);
    int count = 0;
    for (const char *p = list; (p = strstr(p, line)) != NULL; p++)
        if ((p == list || p[-1] == '\n') && p[n] == '\n')
            count++;
    return count;
}

static bool
has_line(const char *list, const char *line)
{
    return count_lines(list, line) > 0;
}

static void
test_man_documents_every_key(void **state)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/doc/man/sesame.conf.5", srcdir());
    char *doc = man_keys(path);
    const char *code = sesame_conf_known_keys();
    int problems = 0;
    char *copy = strdup(code);
    for (char *k = strtok(copy, "\n"); k; k = strtok(NULL, "\n")) {
        if (!has_line(doc, k)) {
            fprintf(stderr, "key %s exists in the code but not in doc/man/sesame.conf.5: document it "
                    "in conf/sesame.conf.example, then " REGENERATE "\n", k);
            problems++;
        }
    }
    free(copy);
    copy = strdup(doc);
    int count = 0;
    for (char *k = strtok(copy, "\n"); k; k = strtok(NULL, "\n")) {
        count++;
        if (!has_line(code, k)) {
            fprintf(stderr, "key %s is in doc/man/sesame.conf.5 but unknown to the code: remove it "
                    "from conf/sesame.conf.example, then " REGENERATE "\n", k);
            problems++;
        } else if (count_lines(doc, k) > 1) {
            fprintf(stderr, "key %s is documented twice in doc/man/sesame.conf.5\n", k);
            problems++;
        }
    }
    free(copy);
    free(doc);
    assert_true(count > 0);
    assert_int_equal(problems, 0);
}

static void
test_man_is_generated(void **state)
{
    char cmd[2200];
    snprintf(cmd, sizeof(cmd), "python3 '%s/scripts/gen-conf-man' --check --srcdir '%s'", srcdir(),
             srcdir());
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "doc/man/sesame.conf.5 is not what scripts/gen-conf-man generates: "
                REGENERATE "\n");
    assert_int_equal(rc, 0);
}

static void
test_man_pages_lint(void **state)
{
    if (system("command -v mandoc >/dev/null 2>&1") != 0) {
        fprintf(stderr, "mandoc is not installed: the lint of the man pages is skipped\n");
        skip();
    }
    static const char *const pages[] = {"sesame.8", "sesame-accounts.8", "sesame-audit.8",
                                         "sesame.conf.5"};
    for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
        char cmd[1200];
        /* -Wwarning: warnings and errors (style remarks are not counted) */
        snprintf(cmd, sizeof(cmd), "mandoc -Tlint -Wwarning '%s/doc/man/%s'", srcdir(), pages[i]);
        int rc = system(cmd);
        if (rc != 0)
            fprintf(stderr, "mandoc -Tlint reports warnings for doc/man/%s\n", pages[i]);
        assert_int_equal(rc, 0);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_man_documents_every_key),
        cmocka_unit_test(test_man_is_generated),
        cmocka_unit_test(test_man_pages_lint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
