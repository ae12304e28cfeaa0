#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "account/normalize.h"

static void
check_name(const char *in, const char *want)
{
    char *err = NULL;
    char *got = sesame_normalize_name(in, strlen(in), &err);
    if (got == NULL)
        fail_msg("normalising \"%s\" failed: %s", in, err);
    assert_string_equal(got, want);
    free(got);
}

static void
check_bad(const char *in, size_t len, const char *why)
{
    char *err = NULL;
    char *got = sesame_normalize_name(in, len, &err);
    assert_null(got);
    assert_non_null(err);
    assert_non_null(strstr(err, why));
    free(err);
}

static bool
same(const char *a, const char *b)
{
    char *ea = NULL, *eb = NULL;
    char *na = sesame_normalize_name(a, strlen(a), &ea);
    char *nb = sesame_normalize_name(b, strlen(b), &eb);
    assert_non_null(na);
    assert_non_null(nb);
    bool eq = strcmp(na, nb) == 0;
    free(na);
    free(nb);
    return eq;
}

/* Every given and family name (and nom d'usage) of the test identities in
 * ../shared/fc-test-identities.csv, with its expected normal form. */
static void
test_test_identities(void **state)
{
    static const char *const cases[][2] = {
        {"Marie Claire Odile", "marie claire odile"}, {"MARTIN", "martin"},
        {"Jean-Baptiste", "jean baptiste"},           {"D'ALMEIDA-LÉVÊQUE", "d almeida leveque"},
        {"DUPONT", "dupont"},                         {"Lucie", "lucie"},
        {"MOREAU", "moreau"},                         {"Karim Yanis", "karim yanis"},
        {"BENALI", "benali"},                         {"Paola Maria", "paola maria"},
        {"SANTUCCI", "santucci"},                     {"Théo", "theo"},
        {"PAYET", "payet"},                           {"Alex", "alex"},
        {"ROUSSEL", "roussel"},                       {"Ana", "ana"},
        {"FERREIRA", "ferreira"},                     {"Gérard", "gerard"},
        {"LEFÈVRE", "lefevre"},                       {"Pierre", "pierre"},
        {"BERNARD", "bernard"},                       {"Paul", "paul"},
        {"DURAND", "durand"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_name(cases[i][0], cases[i][1]);
}

static void
test_equivalences(void **state)
{
    assert_true(same("LÉVÊQUE", "leveque"));
    assert_true(same("D'ALMEIDA", "d almeida"));
    assert_true(same("D’ALMEIDA", "d almeida"));
    assert_true(same("D'ALMEIDA-LÉVÊQUE", "d almeida leveque"));
    assert_true(same("d’Almeida – Lévêque", "D ALMEIDA LEVEQUE"));
    /* decomposed: E + U+0301, E + U+0302 */
    assert_true(same("LE\xcc\x81VE\xcc\x82QUE", "leveque"));
    assert_true(same("Jean-Baptiste", "jean baptiste"));
    assert_true(same("  Jean  --  Baptiste\t", "jean baptiste"));
    assert_true(same("Jean\xc2\xa0" "Baptiste", "jean baptiste")); /* no-break space */
    assert_false(same("Jean-Baptiste", "jeanbaptiste"));
    assert_false(same("LEFÈVRE", "lefebvre"));
}

static void
test_latin_letters(void **state)
{
    check_name("éèêëàâäîïôöùûüçœæÿñ", "eeeeaaaiioouuucoeaeyn");
    check_name("ÉÈÊËÀÂÄÎÏÔÖÙÛÜÇŒÆŸÑ", "eeeeaaaiioouuucoeaeyn");
    check_name("ÁÃÅÍÌÓÒÕØÚÝáãåíìóòõøúý", "aaaiioooouyaaaiioooouy");
    check_name("Œuvray", "oeuvray");
    check_name("Lætitia", "laetitia");
    check_name("FRANÇOIS", "francois");
    check_name("Weiß", "weiss");
    /* Latin Extended-A: Polish, Czech, Hungarian, Turkish, Romanian */
    check_name("ŁUKASZ Wałęsa", "lukasz walesa");
    check_name("Dvořák Šťastný", "dvorak stastny");
    check_name("Erdős Ĳssel", "erdos ijssel");
    check_name("İSTANBUL ığdır", "istanbul igdir");
    check_name("Ștefan Țară", "stefan tara");
    /* lower-cased, not folded */
    check_name("ΑΒΓ Δέλτα", "αβγ δέλτα");
    check_name("ИВАН Ёлкин", "иван ёлкин");
    /* other characters kept */
    check_name("St. Pierre", "st. pierre");
    check_name("×", "×");
}

static void
test_separators(void **state)
{
    check_name("-", "");
    check_name("  ", "");
    check_name("'O'Neil'", "o neil");
    check_name("A\xe2\x80\x91" "B", "a b");   /* non-breaking hyphen */
    check_name("A\xe2\x80\x94" "B", "a b");   /* em dash */
    check_name("A\xca\xbc" "B", "a b");       /* modifier apostrophe */
    check_name("A`B\xc2\xb4" "C", "a b c");
    check_name("\xcc\x81" "A", "a");           /* leading combining mark dropped */
}

static void
test_invalid(void **state)
{
    check_bad("\xc3", 1, "UTF-8");                 /* truncated */
    check_bad("a\xc3(", 3, "UTF-8");               /* bad continuation */
    check_bad("\xc0\xaf", 2, "UTF-8");             /* overlong */
    check_bad("\xe0\x80\xaf", 3, "UTF-8");         /* overlong */
    check_bad("\xed\xa0\x80", 3, "UTF-8");         /* surrogate */
    check_bad("\xf4\x90\x80\x80", 4, "UTF-8");     /* above U+10FFFF */
    check_bad("\xff", 1, "UTF-8");
    check_bad("a\0b", 3, "UTF-8");                 /* NUL */
    check_bad("a\nb", 3, "control");
    check_bad("a\x7f" "b", 3, "control");
    check_bad("a\xc2\x85" "b", 4, "control");      /* C1 NEL */
    char *big = malloc(SESAME_NORMALIZE_NAME_MAX + 1);
    memset(big, 'a', SESAME_NORMALIZE_NAME_MAX + 1);
    check_bad(big, SESAME_NORMALIZE_NAME_MAX + 1, "longer");
    char *err = NULL;
    char *ok = sesame_normalize_name(big, SESAME_NORMALIZE_NAME_MAX, &err);
    assert_non_null(ok);
    assert_int_equal(strlen(ok), SESAME_NORMALIZE_NAME_MAX);
    free(ok);
    free(big);
}

static void
test_utf8_valid(void **state)
{
    assert_true(sesame_normalize_utf8_valid("Lévêque", strlen("Lévêque"), false));
    assert_true(sesame_normalize_utf8_valid("", 0, false));
    assert_true(sesame_normalize_utf8_valid("\xf0\x9f\x98\x80", 4, false)); /* U+1F600 */
    assert_false(sesame_normalize_utf8_valid("a\tb", 3, false));
    assert_true(sesame_normalize_utf8_valid("a\tb", 3, true));
    assert_false(sesame_normalize_utf8_valid("\xed\xbf\xbf", 3, true));
    assert_false(sesame_normalize_utf8_valid("\xf0\x8f\xbf\xbf", 4, true)); /* overlong */
    assert_false(sesame_normalize_utf8_valid("a\0", 2, true));
}

static char *
pivot(const char *family, const char *given, const char *date, const char *place,
      const char *country, const char *gender, char **err)
{
    struct sesame_normalize_pivot p = {family, given, date, place, country, gender};
    return sesame_normalize_pivot(&p, err);
}

static void
test_pivot(void **state)
{
    char *err = NULL;
    char *k = pivot("D'ALMEIDA-LÉVÊQUE", "Jean-Baptiste", "1979-03-02", "33063", "99100", NULL,
                    &err);
    assert_non_null(k);
    assert_string_equal(k, "d almeida leveque|jean baptiste|1979-03-02|33063|99100");
    assert_int_equal(sesame_normalize_homonym_len(k),
                     strlen("d almeida leveque|jean baptiste|1979-03-02"));
    free(k);

    k = pivot("SANTUCCI", "Paola Maria", "1990-01-09", "2a004", "99100", "female", &err);
    assert_string_equal(k, "santucci|paola maria|1990-01-09|2A004|99100|female");
    free(k);

    /* born abroad: empty birthplace */
    k = pivot("BENALI", "Karim Yanis", "1985-11-30", "", "99352", NULL, &err);
    assert_string_equal(k, "benali|karim yanis|1985-11-30||99352");
    free(k);

    /* homonyms: same homonym key, different pivots */
    char *p1 = pivot("BERNARD", "Pierre", "1970-04-12", "31555", "99100", NULL, &err);
    char *p2 = pivot("Bernard", "PIERRE", "1970-04-12", "67482", "99100", NULL, &err);
    assert_non_null(p1);
    assert_non_null(p2);
    assert_string_not_equal(p1, p2);
    size_t h1 = sesame_normalize_homonym_len(p1), h2 = sesame_normalize_homonym_len(p2);
    assert_int_equal(h1, h2);
    assert_memory_equal(p1, p2, h1);
    free(p1);
    free(p2);
}

static void
check_pivot_bad(const char *family, const char *given, const char *date, const char *place,
                const char *country, const char *gender, const char *want)
{
    char *err = NULL;
    char *k = pivot(family, given, date, place, country, gender, &err);
    assert_null(k);
    assert_non_null(err);
    assert_string_equal(err, want);
    free(err);
}

static void
test_pivot_bad(void **state)
{
    check_pivot_bad(NULL, "Marie", "1962-08-24", "75107", "99100", NULL, "family_name missing");
    check_pivot_bad("-", "Marie", "1962-08-24", "75107", "99100", NULL, "family_name: empty");
    check_pivot_bad("MARTIN", "Ma|rie", "1962-08-24", "75107", "99100", NULL,
                    "given_name: holds '|'");
    check_pivot_bad("MARTIN", "Marie\xc3", "1962-08-24", "75107", "99100", NULL,
                    "given_name: name is not valid UTF-8");
    check_pivot_bad("MARTIN", "Marie", "1962/08/24", "75107", "99100", NULL,
                    "birthdate: not YYYY-MM-DD");
    check_pivot_bad("MARTIN", "Marie", "62-08-24", "75107", "99100", NULL,
                    "birthdate: not YYYY-MM-DD");
    check_pivot_bad("MARTIN", "Marie", "1962-08-24", "7510", "99100", NULL,
                    "birthplace: not a 5-character INSEE code");
    check_pivot_bad("MARTIN", "Marie", "1962-08-24", "75|07", "99100", NULL,
                    "birthplace: not a 5-character INSEE code");
    check_pivot_bad("MARTIN", "Marie", "1962-08-24", "75107", "France", NULL,
                    "birthcountry: not a 5-digit INSEE code");
    check_pivot_bad("MARTIN", "Marie", "1962-08-24", "75107", NULL, NULL, "birthcountry: missing");
    check_pivot_bad("MARTIN", "Marie", "1962-08-24", "75107", "99100", "f",
                    "gender: not male, female or unspecified");
    /* padded dates are accepted as received */
    char *err = NULL;
    char *k = pivot("FERREIRA", "Ana", "1992-00-00", "", "99139", NULL, &err);
    assert_non_null(k);
    free(k);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_test_identities), cmocka_unit_test(test_equivalences),
        cmocka_unit_test(test_latin_letters),   cmocka_unit_test(test_separators),
        cmocka_unit_test(test_invalid),         cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_pivot),           cmocka_unit_test(test_pivot_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
