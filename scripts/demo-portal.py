#!/usr/bin/python3
"""The demo communes' web portal: a small upstream behind Sésame (scripts/demo).

Usage: demo-portal.py --port N [--host 127.0.0.1] [--prefix /sesame/] [--ready-file F]

One process serves every commune of the demo; the commune is chosen from the Host header
(Sésame forwards the citizen's Host: ville-a.localhost:8080 -> "Ville d'Arbre"), on any of the
commune's host names (www.ville-a.localhost, services.ville-a.localhost: the first label that
names a commune). Plain HTTP/1.1,
python3 standard library only. `--port 0` binds a free port; `READY <port>` is printed on stdout
and written (same line) to the ready file, atomically, once listening. One line per request on
stderr: method, path without the query, status (never a header value: they hold personal data).

Pages (French, no JavaScript, no resource from elsewhere, one stylesheet /static/portail.css):
  /                    public home page: the commune's services, with links
  /demarches           signed-in: greets the citizen by name, lists the X-Sesame-* headers received
  /cantine             signed-in: same, for the school canteen service
  /elections           signed-in, adults only in the demo configuration (Sésame refuses minors)
  /contact, /mentions-legales   public pages the sign-in pages link to
  /static/portail.css  the stylesheet
Anything else: 404 page.

Trust: the portal believes the X-Sesame-* headers it receives only because Sésame removes every
client-sent header under its prefix (whatever its case, with '-' or '_') before forwarding, and
the portal listens on loopback where only Sésame reaches it. A portal reachable without Sésame
in front must never trust such headers.
"""

import argparse
import html
import http.server
import json
import threading
import os
import re
import socket
import sys
import time
import urllib.parse

HEADER_PREFIX = "x-sesame-"
MAX_HEADER_VALUE = 4096

COMMUNES = {
    "ville-a": {"name": "Ville d'Arbre", "short": "Arbre"},
    "ville-b": {"name": "Ville de Bois", "short": "Bois"},
    "mairie-cerisier": {"name": "Mairie de Cerisier", "short": "Cerisier"},
    "ville-saules": {"name": "Ville des Saules", "short": "Saules"},
}
DEFAULT_COMMUNE = {"name": "Commune de démonstration", "short": "Démo"}

SERVICES = [
    {"path": "/demarches", "title": "Démarches en ligne",
     "summary": "Demander un acte d'état civil, signaler un problème de voirie, suivre vos "
                "demandes.",
     "body": "Vos demandes en cours apparaîtraient ici. Dans cette démonstration, aucune "
             "demande n'est enregistrée."},
    {"path": "/cantine", "title": "Cantine scolaire",
     "summary": "Inscrire vos enfants à la cantine et payer les repas.",
     "body": "Les menus de la semaine et vos factures apparaîtraient ici. Vous êtes passé(e) "
             "d'un service à l'autre sans vous identifier à nouveau."},
    {"path": "/elections", "title": "Inscription sur les listes électorales",
     "summary": "Réservé aux personnes majeures.",
     "body": "Vous pourriez ici vous inscrire sur les listes électorales de la commune. "
             "Sésame a vérifié que vous avez 18 ans ou plus, sans transmettre d'autre "
             "information que celles listées ci-dessous."},
]

# Names of the claims, as citizens know them.
CLAIM_LABELS = {
    "givenname": "Prénoms",
    "familyname": "Nom de naissance",
    "birthdate": "Date de naissance",
    "preferredusername": "Nom d'usage",
    "gender": "Sexe",
    "birthplace": "Lieu de naissance (code INSEE)",
    "birthcountry": "Pays de naissance (code INSEE)",
    "email": "Adresse électronique",
    "account": "Identifiant de compte",
    "accountid": "Identifiant de compte",
    "acr": "Niveau de garantie de l'identité",
    "tenant": "Commune",
    "provider": "Service d'identification utilisé",
}

CSS = """\
*,*::before,*::after{box-sizing:border-box}
html{font-size:100%;-webkit-text-size-adjust:100%;text-size-adjust:100%}
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;
line-height:1.5;color:#161616;background:#fff}
a{color:#000091;text-decoration:underline;text-underline-offset:.15em}
a:hover{text-decoration-thickness:2px}
a:focus-visible,button:focus-visible{outline:3px solid #0a76f6;outline-offset:2px}
.skip{position:absolute;left:-10000px;top:0;background:#fff;padding:.5rem 1rem}
.skip:focus{left:.5rem;top:.5rem;z-index:10}
header{border-bottom:4px solid #000091;padding:1rem}
header .brand{font-size:1.25rem;font-weight:700;margin:0}
header .brand a{color:#161616;text-decoration:none}
header p{margin:.25rem 0 0;color:#3a3a3a}
main{max-width:48rem;margin:0 auto;padding:1rem}
h1{font-size:1.75rem;line-height:1.25;margin:.5rem 0 1rem}
h2{font-size:1.25rem;margin:1.5rem 0 .5rem}
ul.services{list-style:none;padding:0;margin:0}
ul.services li{border:1px solid #ddd;border-left:4px solid #000091;padding:.75rem 1rem;
margin:0 0 .75rem}
ul.services a{font-weight:700;font-size:1.1rem}
ul.services p{margin:.25rem 0 0}
dl.identity{margin:0;border-bottom:1px solid #ddd}
dl.identity dt{font-weight:700;border-top:1px solid #ddd;padding-top:.5rem}
dl.identity dd{margin:0;padding-bottom:.5rem;overflow-wrap:anywhere}
.header-name{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9rem;color:#3a3a3a;
font-weight:400;overflow-wrap:anywhere}
.notice{background:#e8edff;border-left:4px solid #000091;padding:.75rem 1rem}
.signout{display:inline-block;margin-top:1.5rem;padding:.6rem 1rem;border:2px solid #000091;
font-weight:700;text-decoration:none}
.signout:hover{background:#e8edff}
footer{border-top:1px solid #ddd;padding:1rem;margin-top:2rem;font-size:.9rem}
footer ul{list-style:none;padding:0;margin:0;display:flex;flex-wrap:wrap;gap:.5rem 1.5rem}
@media (min-width:40em){header,footer{padding:1rem 2rem}h1{font-size:2rem}}
"""

SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
]


def esc(text):
    return html.escape(text, quote=True)


def log_line(text):
    sys.stderr.write("%s portal %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), text))
    sys.stderr.flush()


def commune_for(host_header):
    """Host header ("ville-a.localhost:8080", "www.ville-a.localhost:8080") -> (key, commune
    dict): the first label of the host name that names a commune."""
    host = (host_header or "").strip().lower()
    if host.startswith("["):
        host = host.split("]", 1)[0] + "]"
    else:
        host = host.split(":", 1)[0]
    labels = host.split(".")
    for key in labels:
        if key in COMMUNES:
            return key, COMMUNES[key]
    return labels[0], DEFAULT_COMMUNE


def header_text(raw):
    """A header value as http.server gives it (bytes read as latin-1) -> the text Sésame meant:
    UTF-8 percent-encoded by default, so decode the percent escapes as UTF-8."""
    raw = raw[:MAX_HEADER_VALUE]
    try:
        data = raw.encode("latin-1")
    except UnicodeEncodeError:
        data = raw.encode("utf-8", "replace")
    text = data.decode("utf-8", "replace")
    return urllib.parse.unquote(text, encoding="utf-8", errors="replace")


def identity_headers(headers):
    """-> list of (header name as received, normalised key, decoded value) for X-Sesame-*."""
    out = []
    for name, value in headers.items():
        lower = name.lower().replace("_", "-")
        if not lower.startswith(HEADER_PREFIX):
            continue
        key = re.sub(r"[-_]", "", lower[len(HEADER_PREFIX):])
        out.append((name, key, header_text(value)))
    return out


def layout(commune, prefix, title, body, signed_in=False):
    home = "/"
    footer_links = [("/contact", "Contact"), ("/mentions-legales", "Mentions légales")]
    links = "".join('<li><a href="%s">%s</a></li>' % (esc(h), esc(t)) for h, t in footer_links)
    signout = ""
    if signed_in:
        signout = ('<p><a class="signout" href="%s">Se déconnecter</a></p>'
                   % esc(prefix + "logout"))
    return ("<!DOCTYPE html>\n"
            "<html lang=\"fr\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<title>%(title)s - %(name)s</title>\n"
            "<link rel=\"stylesheet\" href=\"/static/portail.css\">\n"
            "</head>\n<body>\n"
            "<a class=\"skip\" href=\"#contenu\">Aller au contenu</a>\n"
            "<header>\n<p class=\"brand\"><a href=\"%(home)s\">%(name)s</a></p>\n"
            "<p>Portail des services en ligne (démonstration)</p>\n</header>\n"
            "<main id=\"contenu\" tabindex=\"-1\">\n%(body)s\n%(signout)s\n</main>\n"
            "<footer>\n<nav aria-label=\"Liens utiles\"><ul>%(links)s</ul></nav>\n"
            "<p>Site de démonstration de Sésame : les personnes et les données sont "
            "fictives.</p>\n</footer>\n</body>\n</html>\n"
            % {"title": esc(title), "name": esc(commune["name"]), "home": esc(home),
               "body": body, "signout": signout, "links": links})


def home_page(commune, prefix):
    items = []
    for s in SERVICES:
        items.append("<li><a href=\"%s\">%s</a><p>%s</p></li>"
                     % (esc(s["path"]), esc(s["title"]), esc(s["summary"])))
    body = ("<h1>Bienvenue sur le portail de la %s</h1>\n"
            "<p>Ces services demandent de vous identifier avec FranceConnect : vous utilisez "
            "un compte que vous avez déjà (impots.gouv.fr, ameli.fr, l'Identité Numérique La "
            "Poste…). Vous ne vous identifiez qu'une fois pour tous les services.</p>\n"
            "<h2>Services en ligne</h2>\n<ul class=\"services\">\n%s\n</ul>"
            % (esc(commune["name"]), "\n".join(items)))
    return layout(commune, prefix, "Accueil", body)


def service_page(commune, prefix, service, headers):
    ident = identity_headers(headers)
    values = {}
    for _, key, value in ident:
        values.setdefault(key, value)
    name = " ".join(v for v in (values.get("givenname", ""), values.get("familyname", "")) if v)
    greeting = "Bonjour %s" % name if name else "Bonjour"
    if ident:
        rows = []
        for header, key, value in ident:
            label = CLAIM_LABELS.get(key, "Autre information")
            rows.append("<dt>%s <span class=\"header-name\">(%s)</span></dt><dd>%s</dd>"
                        % (esc(label), esc(header), esc(value) if value else "<em>(vide)</em>"))
        received = ("<p>La commune a reçu de Sésame les informations suivantes, et seulement "
                    "celles-ci :</p>\n<dl class=\"identity\">\n%s\n</dl>" % "\n".join(rows))
    else:
        received = ("<p class=\"notice\">Aucune information d'identité n'a été reçue de "
                    "Sésame.</p>")
    body = ("<h1>%s</h1>\n<p class=\"greeting\" id=\"greeting\">%s</p>\n"
            "<p>%s</p>\n<h2>Ce que le service a reçu</h2>\n%s\n"
            "<p><a href=\"/\">Retour à l'accueil</a></p>"
            % (esc(service["title"]), esc(greeting), esc(service["body"]), received))
    return layout(commune, prefix, service["title"], body, signed_in=True)


def simple_page(commune, prefix, title, text):
    body = ("<h1>%s</h1>\n<p>%s</p>\n<p><a href=\"/\">Retour à l'accueil</a></p>"
            % (esc(title), esc(text)))
    return layout(commune, prefix, title, body)


FORM_PAGE = """<h1>Demande d'acte</h1>
<form method="post" action="/demarches/formulaire">
<p><label for="motif">Motif de la demande</label><br>
<textarea id="motif" name="motif" rows="4" cols="40"></textarea></p>
<p><button type="submit" id="envoyer">Envoyer la demande</button></p>
</form>"""


class PortalHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "demo-portal"
    sys_version = ""
    timeout = 60

    def _send(self, status, body, ctype="text/html; charset=utf-8", cache="no-store"):
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", cache)
        for name, value in SECURITY_HEADERS:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _discard_body(self):
        length = self.headers.get("Content-Length", "0").strip()
        if length.isdigit() and 0 < int(length) <= 1 << 20:
            self.rfile.read(int(length))
        elif length not in ("", "0") or self.headers.get("Transfer-Encoding"):
            self.close_connection = True

    def do_GET(self):
        self._discard_body()
        prefix = self.server.prefix
        path = urllib.parse.urlsplit(self.path).path
        _, commune = commune_for(self.headers.get("Host"))
        if path == "/static/portail.css":
            return self._send(200, CSS, "text/css; charset=utf-8", "public, max-age=300")
        if path in ("/", "/index.html"):
            return self._send(200, home_page(commune, prefix))
        if path == "/demarches/formulaire":
            return self._send(200, layout(commune, prefix, "Demande d'acte", FORM_PAGE))
        if path == "/__received":  # for the browser test, reached directly
            with self.server.lock:
                data = json.dumps(self.server.received)
            return self._send(200, data, "application/json")
        for service in SERVICES:
            if path == service["path"] or path.startswith(service["path"] + "/"):
                return self._send(200, service_page(commune, prefix, service, self.headers))
        if path == "/contact":
            return self._send(200, simple_page(
                commune, prefix, "Contact",
                "Pour toute question, la mairie vous accueille du lundi au vendredi, de 9 h à "
                "17 h (commune fictive de démonstration)."))
        if path == "/mentions-legales":
            return self._send(200, simple_page(
                commune, prefix, "Mentions légales",
                "Ce portail est une démonstration de Sésame. Il ne conserve aucune donnée : "
                "les identités utilisées sont celles, fictives, d'un FranceConnect de test."))
        return self._send(404, simple_page(commune, prefix, "Page introuvable",
                                           "La page demandée n'existe pas."))

    do_HEAD = do_GET

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        length = self.headers.get("Content-Length", "0").strip()
        if path == "/demarches/formulaire" and length.isdigit() and int(length) <= 1 << 20:
            raw = self.rfile.read(int(length))
            with self.server.lock:
                self.server.received.append({"path": self.path, "body": raw.decode("utf-8", "replace"),
                                             "content_type": self.headers.get("Content-Type", ""),
                                             "account": self.headers.get("X-Sesame-Account", "")})
            _, commune = commune_for(self.headers.get("Host"))
            fields = urllib.parse.parse_qs(raw.decode("utf-8", "replace"))
            text = fields.get("motif", [""])[0]
            return self._send(200, simple_page(commune, self.server.prefix, "Demande reçue",
                                               "Votre demande a bien été reçue : " + text))
        self._discard_body()
        _, commune = commune_for(self.headers.get("Host"))
        self._send(405, simple_page(commune, self.server.prefix, "Action impossible",
                                    "Cette page ne reçoit pas de formulaire."))

    def log_request(self, code="-", size="-"):
        path = urllib.parse.urlsplit(getattr(self, "path", "-")).path
        log_line("%s %s %s" % (getattr(self, "command", "-"), path[:200], code))

    def log_error(self, fmt, *args):
        log_line("request error")


class PortalServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, family, prefix):
        self.address_family = family
        self.prefix = prefix
        self.lock = threading.Lock()
        self.received = []  # form POSTs of /demarches/formulaire, for the browser test
        super().__init__(address, PortalHandler)


def write_ready(path, line):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w", encoding="ascii") as f:
        f.write(line + "\n")
    os.replace(tmp, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Demo commune portal behind Sésame.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--prefix", default="/sesame/",
                        help="Sésame's reserved path prefix (for the sign-out link)")
    parser.add_argument("--ready-file", default=None)
    args = parser.parse_args(argv)
    prefix = "/" + args.prefix.strip("/") + "/"
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    server = PortalServer((args.host, args.port), family, prefix)
    line = "READY %d" % server.server_address[1]
    print(line, flush=True)
    if args.ready_file:
        write_ready(args.ready_file, line)
    log_line("listening on %s:%d" % (args.host, server.server_address[1]))
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
