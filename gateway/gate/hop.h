/*
 * hop.h - one session across the host names of a tenant that do not share a
 * cookie (no cookie_domain): the hop through the sign-in host.
 *
 * The session cookie is host-only. The sign-in host is the host of the
 * tenant's public_url (where the provider's callback is registered). A
 * citizen on another host H of the tenant with no session there is sent:
 *   1. from H, with a hop cookie N (random, host-only on H, lifetime
 *      login_timeout) to  <public_url><prefix>sso?return_to=B[&acr=][&provider(s)=]
 *      where B = <scheme>://H[:port]<prefix>hop?n=N&r=<path?query on H>;
 *   2. at the sign-in host: if its session cookie names a valid session of
 *      the tenant that meets acr and providers, a one-time ticket (random,
 *      32 bytes, single use, stored sealed in Redis for SESAME_HOP_TICKET_MS,
 *      bound to the tenant, the host H and N) is minted and the browser goes
 *      to B&ticket=T; otherwise to the sign-in page (or the provider) with
 *      return_to=B, and the sign-in ends at B, which comes back to step 2;
 *   3. at H, <prefix>hop: the hop cookie must equal n, the ticket is taken
 *      (deleted) and must name this tenant, this host and n; then the session
 *      cookie of H is set to the same session and the browser goes (303) to r.
 * A ticket replayed, expired, minted for another host, or presented by a
 * browser without the hop cookie is refused (400) and changes nothing. No
 * token and no personal data travel in a URL, only the ticket. Signing out
 * on any host ends the one session for all of them.
 *
 * Territories (config.h: a [territory NAME] section, loaded as the tenant
 * "@NAME" whose only host is its public_url's; member tenants name it with
 * `territory = NAME`). The same three steps carry one sign-in across the
 * member tenants' own domains, with the territory's host as the sign-in
 * host of every host of every member:
 *   1. from H, a host of member M: the hop cookie N and a redirect to
 *      <territory public_url><prefix>sso?return_to=B[&acr=][&provider(s)=];
 *   2. at the territory host, sso accepts B on the hosts of any member M
 *      (return_to rules as usual, for M's hosts and public URL). With a
 *      territory session meeting acr and provider(s), whose provider M
 *      accepts: a ticket (kind "territory": M, H, N and the territory
 *      session's id; 30 s, single use, sealed in Redis), else the
 *      territory's sign-in page (naming the communes that will recognise
 *      the citizen) or its provider, then back to B, which asks step 2 again;
 *   3. at H, <prefix>hop: as above for M, H and N, then the territory session
 *      is loaded, its provider must be one M accepts, and M's own sign-in
 *      ends from that identity (sesame_flow_derive): M's accounts plugin, M's
 *      own session (M's account, the claims M's routes use, ending at the
 *      latest with the territory session, in its tree), M's cookie, 303 to r.
 * A ticket of one kind is never accepted as the other. A route of M needing
 * a higher acr, or another provider, than its session has sends the citizen
 * through the same steps with acr / provider(s): the territory signs in
 * again (step up), its new session keeps the tree of the one it replaces.
 * Logging out anywhere ends the whole tree (gate/flow.h).
 */
#ifndef SESAME_GATE_HOP_H
#define SESAME_GATE_HOP_H

#include "http/server.h"

#define SESAME_HOP_TICKET_MS 30000

/* Whether a sign-in started on the request's host must hop through the
 * sign-in host: the tenant is a member of a territory, or it has no
 * cookie_domain and the request's host is not the host of its public_url. */
bool sesame_hop_needed(const struct sesame_req *req);

/* The tenant whose host signs in for the request's tenant: its territory
 * when it joins one, else itself. */
const struct sesame_conf_tenant *sesame_hop_signin_tenant(const struct sesame_req *req);

/* Sets the hop cookie on the response (reusing the browser's current one)
 * and returns the malloc'd URL B of step 1 for the current request, or NULL
 * on failure. */
char *sesame_hop_back_url(struct sesame_req *req);

/* For <prefix>signin or <prefix>login asked on a host that needs the hop
 * (their pending sign-in could not be bound to a browser cookie that the
 * callback on the sign-in host sees): redirects to step 1 with the relative
 * return_to of the query (else "/"), keeping acr and provider(s). */
void sesame_hop_restart(struct sesame_req *req);

/* GET <prefix>sso (step 2). */
void sesame_hop_sso(struct sesame_req *req);

/* GET <prefix>hop (step 3). Without a ticket it starts again at step 1 for r. */
void sesame_hop_redeem(struct sesame_req *req);

#endif
