#include "tools/csv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "account/normalize.h"

/* Windows-1252 0x80..0x9F (0: undefined); 0xA0..0xFF are U+00A0..U+00FF. */
static const unsigned short cp1252_high[32] = {
    0x20AC, 0,      0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0,      0x017D, 0,      0,      0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0,      0x017E, 0x0178,
};

char *
sesame_csv_cp1252_to_utf8(const char *s, size_t len, size_t *outlen, size_t *bad)
{
    char *out = sesame_malloc(len * 3 + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        unsigned cp = c;
        if (c >= 0x80 && c < 0xA0)
            cp = cp1252_high[c - 0x80];
        if (cp == 0) {
            free(out);
            *bad = i;
            return NULL;
        }
        if (cp < 0x80) {
            out[o++] = (char)cp;
        } else if (cp < 0x800) {
            out[o++] = (char)(0xC0 | (cp >> 6));
            out[o++] = (char)(0x80 | (cp & 0x3F));
        } else {
            out[o++] = (char)(0xE0 | (cp >> 12));
            out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            out[o++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    out[o] = '\0';
    *outlen = o;
    return out;
}

static void
add_error(char **errors, int line, const char *msg)
{
    char *next = sesame_asprintf("%s%sline %d: %s", *errors ? *errors : "", *errors ? "\n" : "", line, msg);
    free(*errors);
    *errors = next;
}

static void
row_free(struct sesame_csv_row *r)
{
    for (size_t i = 0; i < r->nfields; i++)
        free(r->fields[i]);
    free(r->fields);
    r->fields = NULL;
    r->nfields = 0;
}

void
sesame_csv_free(struct sesame_csv *csv)
{
    if (csv == NULL)
        return;
    for (size_t i = 0; i < csv->nrows; i++)
        row_free(&csv->rows[i]);
    free(csv->rows);
    memset(csv, 0, sizeof(*csv));
}

/* The separator of a line: the more frequent of ',' and ';' outside quotes. */
static char
guess_separator(const char *s, size_t len)
{
    size_t commas = 0, semis = 0;
    bool quoted = false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"')
            quoted = !quoted;
        else if (!quoted && s[i] == ',')
            commas++;
        else if (!quoted && s[i] == ';')
            semis++;
    }
    return semis > commas ? ';' : ',';
}

/* Splits one line (without its line end) into fields. */
static int
split_line(const char *s, size_t len, char sep, size_t max_fields, struct sesame_csv_row *r, const char **why)
{
    size_t i = 0;
    r->fields = sesame_calloc(max_fields + 1, sizeof(char *));
    for (;;) {
        if (r->nfields == max_fields) {
            *why = "too many fields";
            return SESAME_ERROR;
        }
        char *buf = sesame_malloc(len + 1);
        size_t o = 0;
        while (i < len && s[i] == ' ')
            i++;
        if (i < len && s[i] == '"') {
            i++;
            for (;;) {
                if (i >= len) {
                    free(buf);
                    *why = "unterminated quoted field (fields cannot span lines)";
                    return SESAME_ERROR;
                }
                if (s[i] == '"') {
                    if (i + 1 < len && s[i + 1] == '"') {
                        buf[o++] = '"';
                        i += 2;
                        continue;
                    }
                    i++;
                    break;
                }
                buf[o++] = s[i++];
            }
            while (i < len && s[i] == ' ')
                i++;
            if (i < len && s[i] != sep) {
                free(buf);
                *why = "text after a closing quote";
                return SESAME_ERROR;
            }
        } else {
            while (i < len && s[i] != sep) {
                if (s[i] == '"') {
                    free(buf);
                    *why = "quote inside an unquoted field";
                    return SESAME_ERROR;
                }
                buf[o++] = s[i++];
            }
            while (o > 0 && buf[o - 1] == ' ')
                o--;
        }
        buf[o] = '\0';
        if (memchr(buf, '\0', o) != NULL) {
            free(buf);
            *why = "NUL byte";
            return SESAME_ERROR;
        }
        r->fields[r->nfields++] = buf;
        if (i >= len)
            return SESAME_OK;
        i++; /* the separator */
    }
}

/* Line number (1-based) of byte offset `at`. */
static int
line_of(const char *data, size_t at)
{
    int line = 1;
    for (size_t i = 0; i < at; i++)
        line += data[i] == '\n';
    return line;
}

int
sesame_csv_parse(const char *data, size_t len, size_t max_fields, const char *header_word,
                 struct sesame_csv *csv, char **errors)
{
    memset(csv, 0, sizeof(*csv));
    csv->separator = ',';
    if (len >= 2 && ((unsigned char)data[0] == 0xFF && (unsigned char)data[1] == 0xFE)) {
        add_error(errors, 1,
                  "UTF-16 text: save the file as \"CSV UTF-8\" or \"CSV "
                  "(séparateur: point-virgule)\"");
        return SESAME_ERROR;
    }
    if (len >= 2 && ((unsigned char)data[0] == 0xFE && (unsigned char)data[1] == 0xFF)) {
        add_error(errors, 1, "UTF-16 text: save the file as \"CSV UTF-8\"");
        return SESAME_ERROR;
    }
    if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0) {
        data += 3;
        len -= 3;
    }
    char *text = NULL;
    if (!sesame_normalize_utf8_valid(data, len, true)) {
        size_t bad = 0, tlen = 0;
        text = sesame_csv_cp1252_to_utf8(data, len, &tlen, &bad);
        if (text == NULL) {
            char msg[128];
            if (data[bad] == '\0')
                snprintf(msg, sizeof(msg), "NUL byte");
            else
                snprintf(msg, sizeof(msg), "byte 0x%02X is neither UTF-8 nor Windows-1252",
                         (unsigned char)data[bad]);
            add_error(errors, line_of(data, bad), msg);
            return SESAME_ERROR;
        }
        csv->cp1252 = true;
        data = text;
        len = tlen;
    }
    size_t cap = 0, hlen = header_word ? strlen(header_word) : 0;
    size_t pos = 0;
    int line = 0;
    bool first = true;
    int rc = SESAME_OK;
    while (pos < len) {
        line++;
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - data) : len;
        size_t l = end - pos;
        if (l > 0 && data[pos + l - 1] == '\r')
            l--;
        const char *s = data + pos;
        pos = nl ? end + 1 : len;
        size_t k = 0;
        while (k < l && (s[k] == ' ' || s[k] == '\t'))
            k++;
        if (k == l || s[k] == '#')
            continue;
        if (first) {
            csv->separator = guess_separator(s, l);
            first = false;
            if (hlen > 0 && l - k >= hlen && strncasecmp(s + k, header_word, hlen) == 0) {
                csv->header = true;
                continue;
            }
        }
        if (csv->nrows == cap) {
            cap = cap ? cap * 2 : 64;
            csv->rows = sesame_realloc(csv->rows, cap * sizeof(*csv->rows));
        }
        struct sesame_csv_row *r = &csv->rows[csv->nrows];
        memset(r, 0, sizeof(*r));
        r->line = line;
        const char *why = NULL;
        if (split_line(s, l, csv->separator, max_fields, r, &why) != SESAME_OK) {
            add_error(errors, line, why);
            row_free(r);
            rc = SESAME_ERROR;
            continue;
        }
        csv->nrows++;
    }
    free(text);
    return rc;
}
