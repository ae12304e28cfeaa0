/*
 * csv.h - the CSV files `sesame-accounts import` reads, as spreadsheets
 * write them: one record per line, RFC 4180 quoting (a field may be enclosed
 * in double quotes, "" inside quotes is one quote; a quoted field cannot
 * span lines).
 *
 *   - Encoding: UTF-8, with or without a BOM; a file that is not valid UTF-8
 *     is read as Windows-1252 (what Excel writes for "CSV (séparateur:
 *     point-virgule)" on a French Windows) and converted. UTF-16 files are
 *     refused with a hint.
 *   - Separator: ',' or ';', chosen from the first line that is neither
 *     blank nor a comment (the header when there is one): the one found more
 *     often outside quotes (',' when neither appears).
 *   - Lines: CR LF or LF; blank lines and lines starting with '#' are
 *     skipped, and so is a first line starting with the header word (e.g.
 *     "family_name", any case). Spaces around unquoted fields are dropped.
 *
 * Pure functions: no I/O.
 */
#ifndef SESAME_TOOLS_CSV_H
#define SESAME_TOOLS_CSV_H

#include "core/common.h"

struct sesame_csv_row {
    int line;      /* 1-based line in the file */
    char **fields; /* UTF-8, NUL-terminated, owned */
    size_t nfields;
};

struct sesame_csv {
    struct sesame_csv_row *rows;
    size_t nrows;
    char separator; /* ',' or ';' */
    bool cp1252;    /* the file was read as Windows-1252 */
    bool header;    /* a header line was skipped */
};

/* Parses len bytes of data into csv (zeroed first). Rows with more than
 * max_fields fields are errors. Returns SESAME_OK, or SESAME_ERROR with
 * *errors listing every bad line, one per line: "line N: message" (csv then
 * holds the good rows; free it either way). */
int sesame_csv_parse(const char *data, size_t len, size_t max_fields, const char *header_word,
                     struct sesame_csv *csv, char **errors);
void sesame_csv_free(struct sesame_csv *csv);

/* Converts Windows-1252 text to UTF-8. Returns a malloc'd NUL-terminated
 * string (*outlen bytes), or NULL when byte s[*bad] is undefined in
 * Windows-1252 (0x81, 0x8D, 0x8F, 0x90, 0x9D) or is NUL. */
char *sesame_csv_cp1252_to_utf8(const char *s, size_t len, size_t *outlen, size_t *bad);

#endif
