/*
 * test_provider_mockfc.h - runs tests/mockfc/mockfc.py for the live tests of
 * httpc and provider: a real HTTPS mock FranceConnect on a free loopback
 * port, with its own temporary directory (test CA, clients file, logs).
 *
 * The mock is started with /usr/bin/python3 in a child that dies with the
 * test process (PR_SET_PDEATHSIG), and is also stopped by an atexit handler,
 * so it never outlives a failed assertion or a crash. Control calls
 * (scenario, autologin, log, authorize) are plain blocking libcurl requests
 * trusting the mock's CA. Failures abort the test run with a message.
 */
#ifndef SESAME_TEST_PROVIDER_MOCKFC_H
#define SESAME_TEST_PROVIDER_MOCKFC_H

#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

#include <jansson.h>

struct mockfc {
    pid_t pid;
    char dir[1024];         /* temporary directory, removed by mockfc_stop */
    char ca_file[PATH_MAX]; /* the mock's test CA (PEM) */
    int port;
    char base[128];         /* https://127.0.0.1:PORT */
    char issuer[160];       /* BASE/api/v2 */
};

/* A temporary directory (mkdtemp under $TMPDIR or /tmp); caller frees the
 * path and removes it with mockfc_rmtree. */
struct sesame_conf_provider;
/* Frees a provider configuration built by a test (every string field and
 * list; NULL accepted). */
void test_provider_conf_free(struct sesame_conf_provider *p);

char *mockfc_tempdir(const char *tag);
void mockfc_rmtree(const char *path);

/* Writes text to dir/name; returns the malloc'd path. */
char *mockfc_write_file(const char *dir, const char *name, const char *text);

/* Starts the mock with `clients` (a JSON array of client objects, borrowed)
 * in mode "fc" or "fcplus"; waits until it listens. */
void mockfc_start(struct mockfc *m, json_t *clients, const char *mode);

/* Stops the mock (SIGTERM, then SIGKILL), reaps it, removes its directory.
 * Idempotent. */
void mockfc_stop(struct mockfc *m);

/* Blocking request to the mock: path is absolute ("/__mock/log") or a full
 * URL. Returns the status; *body (if not NULL) receives the malloc'd body,
 * *location (if not NULL) the malloc'd Location header or NULL. Redirects
 * are not followed. */
long mockfc_request(struct mockfc *m, const char *method, const char *path, const char *json_body,
                    char **body, char **location);

/* POST /__mock/scenario with {"name": name} plus the members of extra
 * (borrowed, may be NULL). */
void mockfc_scenario(struct mockfc *m, const char *name, json_t *extra);
/* POST /__mock/autologin {"login": login}. */
void mockfc_autologin(struct mockfc *m, const char *login);
/* The highest sequence number of the mock's request log so far. */
long mockfc_seq(struct mockfc *m);
/* Number of logged requests to `endpoint` ("jwks", "discovery", "token",
 * ...) after sequence `since`; status_filter 0: any status. */
int mockfc_count(struct mockfc *m, const char *endpoint, long since, long status_filter);
/* The last log record of `endpoint` after `since` (new reference) or NULL. */
json_t *mockfc_last(struct mockfc *m, const char *endpoint, long since);

/* GETs an authorize URL (autologin must be on) and returns the malloc'd
 * code of the redirect, checking that state is echoed. Aborts otherwise. */
char *mockfc_authorize_code(struct mockfc *m, const char *url, const char *state);

#endif
