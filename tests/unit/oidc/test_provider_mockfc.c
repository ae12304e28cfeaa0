/*
 * test_provider_mockfc.c - see test_provider_mockfc.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "test_provider_mockfc.h"

#include "config/config.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#ifndef SESAME_TEST_SRCDIR
#define SESAME_TEST_SRCDIR "."
#endif

#define PYTHON "/usr/bin/python3"
#define MAX_LIVE 8

static struct mockfc *live[MAX_LIVE];
static bool atexit_done;

static void
die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mockfc helper: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i] != NULL && live[i]->pid > 0)
            kill(live[i]->pid, SIGKILL);
    abort();
}

static void
stop_all(void)
{
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i] != NULL)
            mockfc_stop(live[i]);
}

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void
mockfc_rmtree(const char *path)
{
    if (path != NULL && path[0] != '\0')
        nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

char *
mockfc_tempdir(const char *tag)
{
    const char *tmp = getenv("TMPDIR");
    char tmpl[PATH_MAX];
    snprintf(tmpl, sizeof(tmpl), "%s/sesame-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", tag);
    if (mkdtemp(tmpl) == NULL)
        die("mkdtemp: %s", strerror(errno));
    return strdup(tmpl);
}

char *
mockfc_write_file(const char *dir, const char *name, const char *text)
{
    char *path = NULL;
    if (asprintf(&path, "%s/%s", dir, name) < 0)
        die("out of memory");
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(text, f) == EOF || fclose(f) != 0)
        die("cannot write %s", path);
    return path;
}

static char *
read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    char *buf = calloc(1, 65537);
    size_t n = fread(buf, 1, 65536, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static const char *
srcdir(void)
{
    const char *s = getenv("SESAME_SRCDIR");
    return s && *s ? s : SESAME_TEST_SRCDIR;
}

void
mockfc_start(struct mockfc *m, json_t *clients, const char *mode)
{
    memset(m, 0, sizeof(*m));
    if (!atexit_done) {
        atexit(stop_all);
        atexit_done = true;
    }
    int slot = -1;
    for (int i = 0; i < MAX_LIVE && slot < 0; i++)
        if (live[i] == NULL)
            slot = i;
    if (slot < 0)
        die("too many mocks");
    char *dir = mockfc_tempdir("mockfc");
    snprintf(m->dir, sizeof(m->dir), "%s", dir);
    free(dir);
    char *cjson = json_dumps(clients, JSON_INDENT(1));
    char *cpath = mockfc_write_file(m->dir, "clients.json", cjson);
    free(cjson);
    char script[PATH_MAX], pki[PATH_MAX], ready[PATH_MAX], out[PATH_MAX], errp[PATH_MAX];
    snprintf(script, sizeof(script), "%s/tests/mockfc/mockfc.py", srcdir());
    snprintf(pki, sizeof(pki), "%s/pki", m->dir);
    snprintf(ready, sizeof(ready), "%s/ready", m->dir);
    snprintf(out, sizeof(out), "%s/mock.stdout", m->dir);
    snprintf(errp, sizeof(errp), "%s/mock.stderr", m->dir);
    snprintf(m->ca_file, sizeof(m->ca_file), "%s/pki/ca.pem", m->dir);
    if (access(script, R_OK) != 0)
        die("%s not found (set SESAME_SRCDIR)", script);
    if (mkdir(pki, 0700) != 0)
        die("mkdir %s: %s", pki, strerror(errno));

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fe = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fi = open("/dev/null", O_RDONLY);
        if (fo < 0 || fe < 0 || fi < 0)
            _exit(126);
        dup2(fi, 0);
        dup2(fo, 1);
        dup2(fe, 2);
        execl(PYTHON, PYTHON, script, "--port", "0", "--host", "127.0.0.1", "--pki-dir", pki,
              "--config", cpath, "--ready-file", ready, "--mode", mode ? mode : "fc",
              (char *)NULL);
        _exit(127);
    }
    m->pid = pid;
    live[slot] = m;
    free(cpath);
    /* wait for the ready file: "READY <port>" */
    for (int i = 0; i < 1500; i++) {
        char *text = read_file(ready);
        if (text != NULL && sscanf(text, "READY %d", &m->port) == 1 && m->port > 0) {
            free(text);
            break;
        }
        free(text);
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            m->pid = 0;
            char *e = read_file(errp);
            die("the mock exited before it was ready:\n%s", e ? e : "");
        }
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (m->port <= 0)
        die("the mock did not become ready");
    snprintf(m->base, sizeof(m->base), "https://127.0.0.1:%d", m->port);
    snprintf(m->issuer, sizeof(m->issuer), "%s/api/v2", m->base);
}

void
mockfc_stop(struct mockfc *m)
{
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i] == m)
            live[i] = NULL;
    if (m->pid > 0) {
        kill(m->pid, SIGTERM);
        int status;
        bool gone = false;
        for (int i = 0; i < 250 && !gone; i++) {
            if (waitpid(m->pid, &status, WNOHANG) == m->pid) {
                gone = true;
                break;
            }
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        if (!gone) {
            kill(m->pid, SIGKILL);
            waitpid(m->pid, &status, 0);
        }
        m->pid = 0;
    }
    if (m->dir[0] != '\0') {
        if (getenv("SESAME_KEEP_MOCK_DIR") == NULL)
            mockfc_rmtree(m->dir);
        m->dir[0] = '\0';
    }
}

struct buf {
    char *p;
    size_t n;
};

static size_t
buf_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct buf *b = ud;
    size_t n = size * nmemb;
    b->p = realloc(b->p, b->n + n + 1);
    memcpy(b->p + b->n, ptr, n);
    b->n += n;
    b->p[b->n] = '\0';
    return n;
}

static size_t
hdr_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    char **loc = ud;
    size_t n = size * nmemb;
    if (n > 9 && strncasecmp(ptr, "Location:", 9) == 0) {
        const char *v = ptr + 9;
        size_t vl = n - 9;
        while (vl > 0 && (*v == ' ' || *v == '\t'))
            v++, vl--;
        while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
            vl--;
        free(*loc);
        *loc = strndup(v, vl);
    }
    return n;
}

long
mockfc_request(struct mockfc *m, const char *method, const char *path, const char *json_body,
               char **body, char **location)
{
    char url[4096];
    if (strncmp(path, "https://", 8) == 0)
        snprintf(url, sizeof(url), "%s", path);
    else
        snprintf(url, sizeof(url), "%s%s", m->base, path);
    CURL *e = curl_easy_init();
    struct buf b = {0};
    char *loc = NULL;
    struct curl_slist *h = NULL;
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CAINFO, m->ca_file);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, buf_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, hdr_write);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &loc);
    if (strcmp(method, "POST") == 0) {
        h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, json_body ? json_body : "{}");
    }
    CURLcode rc = curl_easy_perform(e);
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    if (rc != CURLE_OK)
        die("request %s %s failed: %s", method, path, curl_easy_strerror(rc));
    if (body)
        *body = b.p ? b.p : strdup("");
    else
        free(b.p);
    if (location)
        *location = loc;
    else
        free(loc);
    return status;
}

void
mockfc_scenario(struct mockfc *m, const char *name, json_t *extra)
{
    json_t *o = extra ? json_deep_copy(extra) : json_object();
    json_object_set_new(o, "name", json_string(name));
    char *text = json_dumps(o, 0);
    json_decref(o);
    char *body = NULL;
    long st = mockfc_request(m, "POST", "/__mock/scenario", text, &body, NULL);
    if (st != 200)
        die("scenario %s refused: %ld %s", name, st, body);
    free(text);
    free(body);
}

void
mockfc_autologin(struct mockfc *m, const char *login)
{
    json_t *o = json_pack("{s:s?}", "login", login);
    char *text = json_dumps(o, 0);
    json_decref(o);
    char *body = NULL;
    long st = mockfc_request(m, "POST", "/__mock/autologin", text, &body, NULL);
    if (st != 200)
        die("autologin %s refused: %ld %s", login ? login : "(none)", st, body);
    free(text);
    free(body);
}

static json_t *
get_log(struct mockfc *m, long since)
{
    char path[64], *body = NULL;
    snprintf(path, sizeof(path), "/__mock/log?since=%ld", since);
    long st = mockfc_request(m, "GET", path, NULL, &body, NULL);
    json_t *log = json_loads(body, 0, NULL);
    if (st != 200 || !json_is_array(log))
        die("mock log: %ld", st);
    free(body);
    return log;
}

long
mockfc_seq(struct mockfc *m)
{
    json_t *log = get_log(m, 0);
    long seq = 0;
    size_t i;
    json_t *e;
    json_array_foreach(log, i, e)
    {
        long s = (long)json_integer_value(json_object_get(e, "seq"));
        if (s > seq)
            seq = s;
    }
    json_decref(log);
    return seq;
}

int
mockfc_count(struct mockfc *m, const char *endpoint, long since, long status_filter)
{
    json_t *log = get_log(m, since);
    int n = 0;
    size_t i;
    json_t *e;
    json_array_foreach(log, i, e)
    {
        const char *ep = json_string_value(json_object_get(e, "endpoint"));
        long st = (long)json_integer_value(json_object_get(e, "status"));
        if (ep && strcmp(ep, endpoint) == 0 && (status_filter == 0 || st == status_filter))
            n++;
    }
    json_decref(log);
    return n;
}

json_t *
mockfc_last(struct mockfc *m, const char *endpoint, long since)
{
    json_t *log = get_log(m, since), *last = NULL;
    size_t i;
    json_t *e;
    json_array_foreach(log, i, e)
    {
        const char *ep = json_string_value(json_object_get(e, "endpoint"));
        if (ep && strcmp(ep, endpoint) == 0)
            last = e;
    }
    json_incref(last);
    json_decref(log);
    return last;
}

/* Value of query parameter `name` in url (percent-decoded), malloc'd. */
static char *
query_param(const char *url, const char *name)
{
    const char *q = strchr(url, '?');
    if (q == NULL)
        return NULL;
    size_t nl = strlen(name);
    for (const char *p = q + 1; *p;) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            CURL *e = curl_easy_init();
            int outlen = 0;
            char *v = curl_easy_unescape(e, p + nl + 1, (int)(len - nl - 1), &outlen);
            char *r = strndup(v, (size_t)outlen);
            curl_free(v);
            curl_easy_cleanup(e);
            return r;
        }
        p += len + (end ? 1 : 0);
    }
    return NULL;
}

char *
mockfc_authorize_code(struct mockfc *m, const char *url, const char *state)
{
    char *body = NULL, *loc = NULL;
    long st = mockfc_request(m, "GET", url, NULL, &body, &loc);
    if (st != 302 || loc == NULL)
        die("authorize answered %ld (not a redirect): %.300s", st, body ? body : "");
    char *code = query_param(loc, "code");
    char *got_state = query_param(loc, "state");
    if (code == NULL || got_state == NULL || strcmp(got_state, state) != 0)
        die("authorize redirect without code or with another state");
    free(got_state);
    free(body);
    free(loc);
    return code;
}

void
test_provider_conf_free(struct sesame_conf_provider *p)
{
    if (p == NULL)
        return;
    free(p->name);
    free(p->issuer);
    free(p->authorization_endpoint);
    free(p->token_endpoint);
    free(p->userinfo_endpoint);
    free(p->jwks_uri);
    free(p->end_session_endpoint);
    free(p->client_id);
    free(p->client_secret);
    free(p->private_key_file);
    free(p->scopes);
    free(p->acr_values);
    for (size_t i = 0; i < p->nauthorize_params; i++)
        free(p->authorize_params[i]);
    free(p->authorize_params);
    free(p->ca_file);
    for (size_t i = 0; i < p->ndecryption_key_files; i++)
        free(p->decryption_key_files[i]);
    free(p->decryption_key_files);
    free(p);
}
