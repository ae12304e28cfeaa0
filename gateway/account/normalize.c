#include "account/normalize.h"

#include <stdlib.h>
#include <string.h>

/* Decodes one UTF-8 sequence at s[*i] (len bytes in all). Returns the code
 * point and advances *i, or -1 for a malformed sequence. */
static long
utf8_next(const unsigned char *s, size_t len, size_t *i)
{
    unsigned c = s[*i];
    unsigned long cp;
    size_t n;
    if (c < 0x80) {
        (*i)++;
        return (long)c;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        n = 1;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 2;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 3;
        cp = c & 0x07;
    } else {
        return -1;
    }
    if (len - *i <= n)
        return -1;
    for (size_t k = 1; k <= n; k++) {
        unsigned cc = s[*i + k];
        if ((cc & 0xc0) != 0x80)
            return -1;
        cp = (cp << 6) | (cc & 0x3f);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return -1;
    *i += n + 1;
    return (long)cp;
}

static bool
is_control(long cp)
{
    return cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f);
}

bool
sesame_normalize_utf8_valid(const char *s, size_t len, bool allow_controls)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        long cp = utf8_next(u, len, &i);
        if (cp <= 0)
            return false;
        if (!allow_controls && is_control(cp))
            return false;
    }
    return true;
}

/* Base letters of U+00C0..U+00FF ('*' = expansion, '=' = keep as is). */
static const char latin1[64 + 1] = "aaaaaa*ceeeeiiii"
                                   "dnooooo=ouuuuy**"
                                   "aaaaaa*ceeeeiiii"
                                   "dnooooo=ouuuuy*y";
/* Base letters of U+0100..U+017F ('*' = expansion). */
static const char latin_ext_a[128 + 1] = "aaaaaaccccccccdd"
                                         "ddeeeeeeeeeegggg"
                                         "gggghhhhiiiiiiii"
                                         "ii**jjkkklllllll"
                                         "lllnnnnnnnnnoooo"
                                         "oo**rrrrrrssssss"
                                         "ssttttttuuuuuuuu"
                                         "uuuuwwyyyzzzzzzs";

/* Folds one code point: writes its ASCII replacement into out (up to 2
 * bytes) and returns its length, or returns 0 when the code point has no
 * ASCII fold (the caller lower-cases it and keeps it). */
static size_t
fold_latin(long cp, char out[2])
{
    if (cp >= 'A' && cp <= 'Z') {
        out[0] = (char)(cp - 'A' + 'a');
        return 1;
    }
    if (cp >= 0xc0 && cp <= 0xff) {
        char b = latin1[cp - 0xc0];
        if (b == '=')
            return 0;
        if (b != '*') {
            out[0] = b;
            return 1;
        }
        switch (cp) {
        case 0xc6: case 0xe6: out[0] = 'a'; out[1] = 'e'; return 2;
        case 0xde: case 0xfe: out[0] = 't'; out[1] = 'h'; return 2;
        default: out[0] = 's'; out[1] = 's'; return 2; /* U+00DF */
        }
    }
    if (cp >= 0x100 && cp <= 0x17f) {
        char b = latin_ext_a[cp - 0x100];
        if (b != '*') {
            out[0] = b;
            return 1;
        }
        if (cp == 0x132 || cp == 0x133) {
            out[0] = 'i';
            out[1] = 'j';
        } else {
            out[0] = 'o';
            out[1] = 'e';
        }
        return 2;
    }
    switch (cp) {
    case 0x218: case 0x219: out[0] = 's'; return 1; /* Ș ș */
    case 0x21a: case 0x21b: out[0] = 't'; return 1; /* Ț ț */
    case 0x1e9e: out[0] = 's'; out[1] = 's'; return 2; /* ẞ */
    default: return 0;
    }
}

static long
lower_other(long cp)
{
    if (cp >= 0x391 && cp <= 0x3a9 && cp != 0x3a2)
        return cp + 0x20; /* Greek */
    if (cp >= 0x410 && cp <= 0x42f)
        return cp + 0x20; /* Cyrillic А..Я */
    if (cp >= 0x400 && cp <= 0x40f)
        return cp + 0x50; /* Cyrillic Ѐ..Џ */
    return cp;
}

static bool
is_separator(long cp)
{
    switch (cp) {
    case ' ': case '\t': case '-': case '\'': case '`':
    case 0xa0: case 0xb4: case 0x2bc:
    case 0x2007: case 0x2009: case 0x202f:
    case 0x2010: case 0x2011: case 0x2012: case 0x2013: case 0x2014:
    case 0x2018: case 0x2019:
        return true;
    default:
        return false;
    }
}

static size_t
utf8_put(char *out, long cp)
{
    unsigned long c = (unsigned long)cp;
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (char)(0xc0 | (c >> 6));
        out[1] = (char)(0x80 | (c & 0x3f));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (char)(0xe0 | (c >> 12));
        out[1] = (char)(0x80 | ((c >> 6) & 0x3f));
        out[2] = (char)(0x80 | (c & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (c >> 18));
    out[1] = (char)(0x80 | ((c >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((c >> 6) & 0x3f));
    out[3] = (char)(0x80 | (c & 0x3f));
    return 4;
}

char *
sesame_normalize_name(const char *s, size_t len, char **err)
{
    if (len > SESAME_NORMALIZE_NAME_MAX) {
        sesame_err_set(err, "name longer than %d bytes", SESAME_NORMALIZE_NAME_MAX);
        return NULL;
    }
    /* Every fold is at most as long as its UTF-8 input: 4 bytes of slack
     * cover the bounds check below. */
    size_t cap = len + 5;
    char *out = sesame_malloc(cap);
    size_t o = 0, i = 0;
    bool pending_space = false;
    const unsigned char *u = (const unsigned char *)s;
    while (i < len) {
        long cp = utf8_next(u, len, &i);
        if (cp < 0 || cp == 0) {
            free(out);
            sesame_err_set(err, "name is not valid UTF-8");
            return NULL;
        }
        if (is_separator(cp)) {
            pending_space = o > 0;
            continue;
        }
        if (is_control(cp)) {
            free(out);
            sesame_err_set(err, "name holds a control character");
            return NULL;
        }
        if (cp >= 0x300 && cp <= 0x36f)
            continue;
        if (o + 5 > cap) { /* cannot happen: folds never grow */
            free(out);
            sesame_err_set(err, "name too long after normalisation");
            return NULL;
        }
        if (pending_space) {
            out[o++] = ' ';
            pending_space = false;
        }
        char folded[2];
        size_t n = fold_latin(cp, folded);
        if (n > 0) {
            memcpy(out + o, folded, n);
            o += n;
        } else {
            o += utf8_put(out + o, lower_other(cp));
        }
    }
    out[o] = '\0';
    return out;
}

static bool
all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static bool
valid_birthdate(const char *s)
{
    return strlen(s) == 10 && all_digits(s, 4) && s[4] == '-' && all_digits(s + 5, 2) &&
           s[7] == '-' && all_digits(s + 8, 2);
}

static bool
valid_birthplace(const char *s)
{
    size_t n = strlen(s);
    if (n == 0)
        return true;
    if (n != 5)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')))
            return false;
    }
    return true;
}

static char *
norm_field(const char *value, const char *field, char **err)
{
    if (value == NULL) {
        sesame_err_set(err, "%s missing", field);
        return NULL;
    }
    char *e = NULL;
    char *n = sesame_normalize_name(value, strlen(value), &e);
    if (n == NULL) {
        sesame_err_set(err, "%s: %s", field, e);
        free(e);
        return NULL;
    }
    if (n[0] == '\0' || strchr(n, '|') != NULL) {
        sesame_err_set(err, "%s: %s", field, n[0] ? "holds '|'" : "empty");
        free(n);
        return NULL;
    }
    return n;
}

char *
sesame_normalize_pivot(const struct sesame_normalize_pivot *p, char **err)
{
    char *family = NULL, *given = NULL, *key = NULL;
    if ((family = norm_field(p->family_name, "family_name", err)) == NULL)
        goto done;
    if ((given = norm_field(p->given_name, "given_name", err)) == NULL)
        goto done;
    if (p->birthdate == NULL || !valid_birthdate(p->birthdate)) {
        sesame_err_set(err, "birthdate: %s", p->birthdate ? "not YYYY-MM-DD" : "missing");
        goto done;
    }
    if (p->birthplace == NULL || !valid_birthplace(p->birthplace)) {
        sesame_err_set(err, "birthplace: %s",
                       p->birthplace ? "not a 5-character INSEE code" : "missing");
        goto done;
    }
    if (p->birthcountry == NULL || strlen(p->birthcountry) != 5 ||
        !all_digits(p->birthcountry, 5)) {
        sesame_err_set(err, "birthcountry: %s",
                       p->birthcountry ? "not a 5-digit INSEE code" : "missing");
        goto done;
    }
    const char *gender = NULL;
    if (p->gender != NULL) {
        static const char *const genders[] = {"male", "female", "unspecified"};
        for (size_t i = 0; i < SESAME_ARRAY_LEN(genders); i++)
            if (strcmp(p->gender, genders[i]) == 0)
                gender = genders[i];
        if (gender == NULL) {
            sesame_err_set(err, "gender: not male, female or unspecified");
            goto done;
        }
    }
    char place[6];
    size_t pl = strlen(p->birthplace);
    for (size_t i = 0; i <= pl; i++) {
        char c = p->birthplace[i];
        place[i] = (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
    }
    key = sesame_asprintf("%s|%s|%s|%s|%s%s%s", family, given, p->birthdate, place,
                          p->birthcountry, gender ? "|" : "", gender ? gender : "");
done:
    free(family);
    free(given);
    return key;
}

size_t
sesame_normalize_homonym_len(const char *pivot_key)
{
    size_t bars = 0, i = 0;
    for (; pivot_key[i] != '\0'; i++)
        if (pivot_key[i] == '|' && ++bars == 3)
            break;
    return i;
}
