/*
 * normalize.h - normalisation of personal names and of the identité pivot,
 * so that a person known to FranceConnect can be matched with a record the
 * commune registered beforehand ("LÉVÊQUE" == "leveque", "D'ALMEIDA" ==
 * "d almeida").
 *
 * Pure functions, thread-safe, no locale: the result does not depend on the
 * environment. Used by the daemon, the `redis` plugin and `sesame-accounts`
 * (the plugin links its own copy, so this module depends only on
 * core/common).
 */
#ifndef SESAME_ACCOUNT_NORMALIZE_H
#define SESAME_ACCOUNT_NORMALIZE_H

#include "core/common.h"

/* Longest name accepted, in bytes (FranceConnect: 256 characters). */
#define SESAME_NORMALIZE_NAME_MAX 1024

/* True when s[0..len) is well-formed UTF-8: no overlong form, no surrogate,
 * nothing above U+10FFFF, no NUL. When allow_controls is false, C0 controls
 * (including TAB, CR, LF), DEL and C1 controls are refused too. */
bool sesame_normalize_utf8_valid(const char *s, size_t len, bool allow_controls);

/* Normalises a family or given name (s, len bytes, UTF-8):
 *   - letters are lower-cased: ASCII, Latin-1 Supplement, Latin Extended-A,
 *     Greek and basic Cyrillic;
 *   - accents are removed from Latin letters (Latin-1 Supplement, Latin
 *     Extended-A, Romanian Ș/Ț), ligatures are expanded (œ -> oe, æ -> ae,
 *     ĳ -> ij, ß -> ss, þ -> th), and decomposed combining marks
 *     U+0300..U+036F are dropped;
 *   - hyphens (- ‐ ‑ ‒ – —), apostrophes (' ’ ‘ ʼ ´ `), spaces, TAB and
 *     no-break spaces are separators: each run of them becomes one space, and
 *     leading/trailing separators are removed;
 *   - every other character is kept as is.
 * Returns a malloc'd NUL-terminated string (possibly empty, e.g. for "-"),
 * or NULL with *err set when the input is not valid UTF-8, holds a control
 * character other than TAB, or is longer than SESAME_NORMALIZE_NAME_MAX. */
char *sesame_normalize_name(const char *s, size_t len, char **err);

/* The identité pivot of a person, as claims or CSV columns (all borrowed). */
struct sesame_normalize_pivot {
    const char *family_name;  /* birth name */
    const char *given_name;   /* all given names, space-separated */
    const char *birthdate;    /* YYYY-MM-DD, digits ("00" parts accepted) */
    const char *birthplace;   /* 5-character INSEE code, "" when born abroad */
    const char *birthcountry; /* 5-digit INSEE code, "99100" for France */
    const char *gender;       /* NULL: not part of the key; else male|female|unspecified */
};

/* Builds the pivot key
 *     family|given|birthdate|birthplace|birthcountry[|gender]
 * with the names normalised by sesame_normalize_name, the birthplace
 * upper-cased, and the gender appended only when p->gender is not NULL.
 * The redis plugin and the CSV import leave gender out: commune records
 * rarely carry it and FranceConnect may answer "unspecified".
 * The part up to the third '|' (names and birthdate) is the homonym key, see
 * sesame_normalize_homonym_len.
 * Returns a malloc'd string, or NULL with *err naming the first bad field
 * (missing, empty name, invalid UTF-8, '|' in a name, malformed date or
 * code). The message never contains the value. */
char *sesame_normalize_pivot(const struct sesame_normalize_pivot *p, char **err);

/* Length of the homonym key (family|given|birthdate) at the start of a key
 * built by sesame_normalize_pivot. */
size_t sesame_normalize_homonym_len(const char *pivot_key);

#endif
