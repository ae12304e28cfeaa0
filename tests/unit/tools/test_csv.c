/*
 * The CSV reader of sesame-accounts import (tools/csv.h): the files a
 * commune's spreadsheet writes, French Excel included.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tools/csv.h"

#define MAXF 40

static void
parse_ok(const char *data, size_t len, struct sesame_csv *csv)
{
    char *errors = NULL;
    if (sesame_csv_parse(data, len, MAXF, "family_name", csv, &errors) != SESAME_OK)
        fail_msg("%s", errors);
    assert_null(errors);
}

static void
check_row(const struct sesame_csv_row *r, int line, size_t n, ...)
{
    assert_int_equal(r->line, line);
    assert_int_equal(r->nfields, n);
    va_list ap;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(r->fields[i], va_arg(ap, const char *));
    va_end(ap);
}

/* "Enregistrer sous > CSV (séparateur: point-virgule)" on a French Windows:
 * Windows-1252, ';', CR LF, no BOM. */
static void
test_french_excel(void **state)
{
    static const char file[] =
        "family_name;given_name;birthdate;birthplace;birthcountry;account_id;quartier\r\n"
        "D'ALMEIDA-L\xc9V\xcaQUE;Jean-Baptiste;1979-03-02;33063;99100;;quartier=Centre\r\n"
        "FRAN\xc7OIS;H\xe9l\xe8ne;1981-07-14;75056;99100;helene-1;quartier=Gare;;\r\n"
        "\"MAR\xc9\x43HAL; dit \"\"le Grand\"\"\";Fran\xe7ois;1950-01-01;;99131;;\r\n"
        "D\x92\x41NGELO;Lo\xef"
        "c;1990-12-31;13055;99100\r\n";
    struct sesame_csv csv;
    parse_ok(file, sizeof(file) - 1, &csv);
    assert_true(csv.cp1252);
    assert_true(csv.header);
    assert_int_equal(csv.separator, ';');
    assert_int_equal(csv.nrows, 4);
    check_row(&csv.rows[0], 2, 7, "D'ALMEIDA-LÉVÊQUE", "Jean-Baptiste", "1979-03-02", "33063", "99100", "",
              "quartier=Centre");
    check_row(&csv.rows[1], 3, 9, "FRANÇOIS", "Hélène", "1981-07-14", "75056", "99100", "helene-1",
              "quartier=Gare", "", "");
    check_row(&csv.rows[2], 4, 7, "MARÉCHAL; dit \"le Grand\"", "François", "1950-01-01", "", "99131", "",
              "");
    /* 0x92 is the typographic apostrophe, U+2019 */
    check_row(&csv.rows[3], 5, 5, "D\u2019ANGELO", "Loïc", "1990-12-31", "13055", "99100");
    sesame_csv_free(&csv);
}

static void
test_utf8_with_bom_and_commas(void **state)
{
    static const char file[] = "\xef\xbb\xbf"
                               "family_name,given_name,birthdate,birthplace,birthcountry\n"
                               "# pré-inscrits\n"
                               "\n"
                               "  MARTIN , Marie Claire Odile,1962-08-24,75107,99100,m1,"
                               "\"quartier=Vieux, port\"\n"
                               "LÉVÊQUE,Noël,1979-03-02,33063,99100";
    struct sesame_csv csv;
    parse_ok(file, sizeof(file) - 1, &csv);
    assert_false(csv.cp1252);
    assert_true(csv.header);
    assert_int_equal(csv.separator, ',');
    assert_int_equal(csv.nrows, 2);
    check_row(&csv.rows[0], 4, 7, "MARTIN", "Marie Claire Odile", "1962-08-24", "75107", "99100", "m1",
              "quartier=Vieux, port");
    check_row(&csv.rows[1], 5, 5, "LÉVÊQUE", "Noël", "1979-03-02", "33063", "99100");
    sesame_csv_free(&csv);
}

static void
test_separator_from_first_line(void **state)
{
    struct sesame_csv csv;
    /* no header: the first data line decides; quoted separators do not count */
    static const char semi[] = "\"A,B,C\";Anne;1962-08-24;75107;99100\nB;Bea;1962-08-24;;99131\n";
    parse_ok(semi, sizeof(semi) - 1, &csv);
    assert_false(csv.header);
    assert_int_equal(csv.separator, ';');
    check_row(&csv.rows[0], 1, 5, "A,B,C", "Anne", "1962-08-24", "75107", "99100");
    sesame_csv_free(&csv);
    static const char comma[] = "MARTIN,Anne,1962-08-24,75107,99100,\"a;b\"\n";
    parse_ok(comma, sizeof(comma) - 1, &csv);
    assert_int_equal(csv.separator, ',');
    check_row(&csv.rows[0], 1, 6, "MARTIN", "Anne", "1962-08-24", "75107", "99100", "a;b");
    sesame_csv_free(&csv);
}

static void
test_errors_name_the_line(void **state)
{
    static const char file[] = "MARTIN;Marie;1962-08-24;75107;99100\n"
                               "\"MARTIN;Marie;1962-08-24\n"
                               "\"MARTIN\"x;Marie\n"
                               "MAR\"TIN;Marie\n"
                               "DURAND;Paul;1960-10-10;69383;99100\n";
    struct sesame_csv csv;
    char *errors = NULL;
    assert_int_equal(sesame_csv_parse(file, sizeof(file) - 1, MAXF, "family_name", &csv, &errors),
                     SESAME_ERROR);
    assert_string_equal(errors, "line 2: unterminated quoted field (fields cannot span lines)\n"
                                "line 3: text after a closing quote\n"
                                "line 4: quote inside an unquoted field");
    free(errors);
    assert_int_equal(csv.nrows, 2);
    assert_int_equal(csv.rows[1].line, 5);
    sesame_csv_free(&csv);

    /* too many fields */
    errors = NULL;
    assert_int_equal(sesame_csv_parse("a,b,c,d\n", 8, 3, NULL, &csv, &errors), SESAME_ERROR);
    assert_string_equal(errors, "line 1: too many fields");
    free(errors);
    sesame_csv_free(&csv);
}

static void
test_encodings_refused(void **state)
{
    struct sesame_csv csv;
    char *errors = NULL;
    /* bytes undefined in Windows-1252 in a file that is not UTF-8 */
    static const char bad[] = "MARTIN;Marie;1962-08-24;75107;99100\nDUR\x81ND;Paul\n";
    assert_int_equal(sesame_csv_parse(bad, sizeof(bad) - 1, MAXF, NULL, &csv, &errors), SESAME_ERROR);
    assert_string_equal(errors, "line 2: byte 0x81 is neither UTF-8 nor Windows-1252");
    free(errors);
    sesame_csv_free(&csv);
    /* UTF-16 (Excel's "Unicode text") */
    errors = NULL;
    static const char u16[] = "\xff\xfeM\0A\0";
    assert_int_equal(sesame_csv_parse(u16, sizeof(u16) - 1, MAXF, NULL, &csv, &errors), SESAME_ERROR);
    assert_non_null(strstr(errors, "line 1: UTF-16 text"));
    free(errors);
    sesame_csv_free(&csv);
    /* NUL */
    errors = NULL;
    static const char nul[] = "A;B\nC\0D;E\n";
    assert_int_equal(sesame_csv_parse(nul, sizeof(nul) - 1, MAXF, NULL, &csv, &errors), SESAME_ERROR);
    assert_string_equal(errors, "line 2: NUL byte");
    free(errors);
    sesame_csv_free(&csv);
}

static void
test_cp1252_table(void **state)
{
    size_t n = 0, bad = 0;
    char *s = sesame_csv_cp1252_to_utf8("\x80\x8c\x9c\xa0\xe9\xff", 6, &n, &bad);
    assert_non_null(s);
    assert_string_equal(s, "€Œœ\u00a0éÿ");
    assert_int_equal(n, strlen(s));
    free(s);
    assert_null(sesame_csv_cp1252_to_utf8("ab\x9d", 3, &n, &bad));
    assert_int_equal(bad, 2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_french_excel),
        cmocka_unit_test(test_utf8_with_bom_and_commas),
        cmocka_unit_test(test_separator_from_first_line),
        cmocka_unit_test(test_errors_name_the_line),
        cmocka_unit_test(test_encodings_refused),
        cmocka_unit_test(test_cp1252_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
