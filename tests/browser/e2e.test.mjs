// End-to-end tests of Sésame in headless Chromium, against the demo (scripts/demo --background on
// free ports): a citizen signs in with the mock FranceConnect, moves between services, is refused
// an adults-only service, cancels at the provider, signs out, opens the commune's other host names
// signed in; every page Sésame serves is checked with axe-core (WCAG 2.1 A/AA) at 1280 and 320 px
// and screenshotted under test-output/browser/. Then the territory: in a Chromium of its own that
// blocks third-party cookies, a citizen signs in once at the territory's host and opens two
// communes on two registrable domains, then signs out of one and is signed out of both.
//
// The steps share the browser and marie's signed-in context, in order. A step whose prerequisite
// step failed fails too, naming it (nothing is skipped).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as lib from './lib.mjs';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';

const FC_BUTTON = /identifier avec\s*FranceConnect/i;
const STEP_TIMEOUT = { timeout: 180000 };

let demo;
let browser;
let recorder;
const marie = {};      // context, page, watch: the citizen of the main journey
const paola = {};      // browser (its own Chromium), context, page, watch: the territory's
const passed = new Set();

function needs(...steps) {
  for (const s of steps) {
    if (!passed.has(s)) throw new Error(`this step needs the step "${s}", which did not pass`);
  }
}

process.on('exit', () => lib.stopDemo(demo));
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => { lib.stopDemo(demo); process.exit(128 + (sig === 'SIGINT' ? 2 : 15)); });
}

before(async () => {
  demo = await lib.startDemo();
  browser = await lib.launchBrowser();
  recorder = lib.newRecorder(demo);
});

after(async () => {
  try {
    if (paola.browser) await paola.browser.close();
    if (browser) await browser.close();
  } finally {
    lib.stopDemo(demo);
  }
});

async function openPage(options = {}) {
  const context = await lib.newContext(browser, recorder, options);
  const page = await context.newPage();
  return { context, page, watch: lib.watchPage(page) };
}

function lastDocument(watch) {
  assert.ok(watch.documents.length > 0, 'no document was loaded');
  return watch.documents[watch.documents.length - 1];
}

function origin(url) {
  return new URL(url).origin;
}

async function bodyText(page) {
  return page.locator('body').innerText();
}

// A page Sésame serves itself: security headers, no script (but `scripts` the caller checked), no CSP violation, zero axe
// violations at both widths, screenshots.
async function checkSesamePage(page, watch, name, { scripts = 0 } = {}) {
  const doc = lastDocument(watch);
  const csp = doc.headers['content-security-policy'] || '';
  assert.match(csp, /default-src 'none'/, `${name}: Content-Security-Policy missing or lax: "${csp}"`);
  assert.equal(doc.headers['x-content-type-options'], 'nosniff', `${name}: X-Content-Type-Options`);
  assert.equal(await page.locator('script').count(), scripts, `${name}: the page has ${scripts ? 'other than its' : 'a'} <script>`);
  assert.equal(await page.locator('html').getAttribute('lang'), 'fr', `${name}: lang is not fr`);
  const found = await lib.checkPage(page, name);
  const report = lib.formatViolations(found);
  assert.equal(report, '', `${name}: axe-core violations:\n${report}`);
  const cspErrors = watch.consoleErrors.filter((t) => /Content Security Policy/i.test(t));
  assert.deepEqual(cspErrors, [], `${name}: the page breaks its own Content-Security-Policy`);
}

// A page of the demo portal (an upstream, not Sésame): accessibility and screenshots only.
async function checkPortalPage(page, name) {
  const found = await lib.checkPage(page, name);
  const report = lib.formatViolations(found);
  assert.equal(report, '', `${name}: axe-core violations:\n${report}`);
}

function fcButton(page) {
  return page.getByRole('link', { name: FC_BUTTON }).or(page.getByRole('button', { name: FC_BUTTON })).first();
}

async function expectSignInPage(page, base) {
  const url = new URL(page.url());
  assert.equal(url.origin, origin(base), `expected the sign-in page of ${base}, got ${page.url()}`);
  assert.ok(url.pathname.startsWith('/sesame/'),
    `expected Sésame's sign-in page under /sesame/, got ${page.url()}`);
  await fcButton(page).waitFor({ state: 'visible' });
}

async function pickIdentity(page, login) {
  await page.waitForURL((u) => u.origin === demo.fcOrigin);
  await page.locator(`#login-${login}`).click();
}

// From Sésame's sign-in page: the FranceConnect button, the identity on the mock, and back on
// the tenant at `path`.
async function signIn(page, base, login, path) {
  await fcButton(page).click();
  await pickIdentity(page, login);
  await page.waitForURL((u) => u.origin === origin(base) && u.pathname === path);
}

test('the demo serves both communes\' public home pages through Sésame', STEP_TIMEOUT, async () => {
  const { context, page } = await openPage();
  try {
    let resp = await page.goto(`${demo.base.a}/`);
    assert.equal(resp.status(), 200);
    assert.match(await page.locator('h1').innerText(), /Ville d'Arbre/);
    await checkPortalPage(page, 'portal-home');
    resp = await page.goto(`${demo.base.b}/`);
    assert.equal(resp.status(), 200);
    assert.match(await page.locator('h1').innerText(), /Ville de Bois/);
  } finally {
    await context.close();
  }
});

test('the demo portal decodes, escapes and shows what it receives (reached directly)', STEP_TIMEOUT, async () => {
  const portal = `http://127.0.0.1:${demo.ports.portal}`;
  const own = { allowed: new Set([portal]), urls: [], foreign: [] };
  const context = await lib.newContext(browser, own, {
    extraHTTPHeaders: {
      'X-Sesame-Given-Name': encodeURIComponent('Jean-Baptiste <img src=x onerror=alert(1)>'),
      'X-Sesame-Family-Name': encodeURIComponent('D\'ALMEIDA-LÉVÊQUE'),
      'X-Sesame-Birthdate': '1979-03-02',
    },
  });
  try {
    const page = await context.newPage();
    const resp = await page.goto(`${portal}/demarches`);
    assert.equal(resp.status(), 200);
    assert.equal(await page.locator('#greeting').innerText(),
      'Bonjour Jean-Baptiste <img src=x onerror=alert(1)> D\'ALMEIDA-LÉVÊQUE');
    assert.equal(await page.locator('img').count(), 0, 'a header value was inserted as HTML');
    assert.match(await bodyText(page), /X-Sesame-Birthdate[\s\S]*1979-03-02/);
    await checkPortalPage(page, 'portal-service-direct');
    assert.deepEqual(own.foreign, []);
  } finally {
    await context.close();
  }
});

test('Sésame\'s 404 page', STEP_TIMEOUT, async () => {
  const { context, page, watch } = await openPage();
  try {
    const resp = await page.goto(`${demo.base.a}/sesame/page-inexistante`);
    assert.equal(resp.status(), 404);
    assert.ok((await bodyText(page)).length > 0);
    await checkSesamePage(page, watch, 'error-404');
  } finally {
    await context.close();
  }
});

test('a signed-in service sends the citizen to the sign-in page', STEP_TIMEOUT, async () => {
  Object.assign(marie, await openPage());
  await marie.page.goto(`${demo.base.a}/demarches`);
  await expectSignInPage(marie.page, demo.base.a);
  assert.equal(lastDocument(marie.watch).status, 200, 'the sign-in page is not a 200');
  await checkSesamePage(marie.page, marie.watch, 'sign-in');
  passed.add('sign-in page');
});

test('FranceConnect button, marie on the mock, back signed in on /demarches', STEP_TIMEOUT, async () => {
  needs('sign-in page');
  const { page } = marie;
  await signIn(page, demo.base.a, 'marie', '/demarches');
  assert.equal(lastDocument(marie.watch).status, 200);
  assert.equal(await page.locator('#greeting').innerText(), 'Bonjour Marie Claire Odile MARTIN');
  const text = await bodyText(page);
  assert.match(text, /1962-08-24/, 'the birthdate claim did not reach /demarches');
  await checkPortalPage(page, 'portal-service');
  passed.add('marie signed in');
});

test('/cantine opens without signing in again', STEP_TIMEOUT, async () => {
  needs('marie signed in');
  const { page } = marie;
  const mark = recorder.urls.length;
  const resp = await page.goto(`${demo.base.a}/cantine`);
  assert.equal(resp.status(), 200);
  assert.equal(new URL(page.url()).pathname, '/cantine');
  assert.equal(await page.locator('#greeting').innerText(), 'Bonjour Marie Claire Odile MARTIN');
  const since = recorder.urls.slice(mark);
  assert.deepEqual(since.filter((u) => origin(u) === demo.fcOrigin || u.includes('/sesame/login')), [],
    'opening /cantine went through a sign-in again');
  assert.doesNotMatch(await bodyText(page), /1962-08-24/, '/cantine received the birthdate it does not list');
});

test('adults-only service: marie (adult) is let in', STEP_TIMEOUT, async () => {
  needs('marie signed in');
  const resp = await marie.page.goto(`${demo.base.a}/elections`);
  assert.equal(resp.status(), 200);
  assert.equal(await marie.page.locator('#greeting').innerText(), 'Bonjour Marie Claire Odile MARTIN');
});

test('the other commune does not accept ville-a\'s session and signs in with its own registration', STEP_TIMEOUT, async () => {
  needs('marie signed in');
  const { page } = marie;
  await page.goto(`${demo.base.b}/demarches`);
  await expectSignInPage(page, demo.base.b);
  const mark = await lib.mockLogMark(demo);
  await signIn(page, demo.base.b, 'marie', '/demarches');
  assert.equal(await page.locator('#greeting').innerText(), 'Bonjour Marie Claire Odile MARTIN');
  assert.match(await page.locator('header').innerText(), /Ville de Bois/);
  const tokens = (await lib.mockLogSince(demo, mark)).filter((e) => e.endpoint === 'token');
  assert.deepEqual(tokens.map((e) => [e.client_id, e.outcome]), [['demo-ville-b', 'ok']],
    'ville-b did not sign in through its own registration');
});

test('adults-only service: lucie (minor) gets the 403 page with the reason', STEP_TIMEOUT, async () => {
  const { context, page, watch } = await openPage();
  try {
    await page.goto(`${demo.base.a}/elections`);
    await expectSignInPage(page, demo.base.a);
    await signIn(page, demo.base.a, 'lucie', '/elections');
    assert.equal(lastDocument(watch).status, 403);
    const text = await bodyText(page);
    assert.match(text, /réservée aux personnes majeures/, 'the 403 page does not give the reason');
    assert.doesNotMatch(text, /Bonjour Lucie/, 'the upstream page was shown to a minor');
    await checkSesamePage(page, watch, 'error-403');
  } finally {
    await context.close();
  }
});

test('provider error: "Annuler" on the mock FranceConnect', STEP_TIMEOUT, async () => {
  const { context, page, watch } = await openPage();
  try {
    await page.goto(`${demo.base.a}/demarches`);
    await expectSignInPage(page, demo.base.a);
    await fcButton(page).click();
    await page.waitForURL((u) => u.origin === demo.fcOrigin);
    await page.locator('#cancel').click();
    await page.waitForURL((u) => u.origin === origin(demo.base.a));
    const doc = lastDocument(watch);
    assert.ok(doc.status >= 400 || new URL(doc.url).pathname.startsWith('/sesame/'),
      `expected Sésame's provider error page, got ${doc.status} ${doc.url}`);
    assert.match(await bodyText(page), /annulé/i, 'the page does not say the sign-in was cancelled');
    const retry = page.locator('a[href*="/sesame/login"], a[href$="/demarches"]');
    assert.ok(await retry.count() > 0, 'no link to try again');
    await checkSesamePage(page, watch, 'provider-error');
    await page.goto(`${demo.base.a}/demarches`);
    await expectSignInPage(page, demo.base.a);
  } finally {
    await context.close();
  }
});

test('sign out: confirmation page, the provider, then back on the commune', STEP_TIMEOUT, async () => {
  needs('marie signed in');
  const { page, watch } = marie;
  await page.goto(`${demo.base.a}/demarches`);
  assert.equal(await page.locator('#greeting').innerText(), 'Bonjour Marie Claire Odile MARTIN');
  await page.getByRole('link', { name: 'Se déconnecter' }).click();
  await page.waitForURL((u) => u.origin === origin(demo.base.a) && u.pathname === '/sesame/logout');
  assert.equal(lastDocument(watch).status, 200);
  await checkSesamePage(page, watch, 'logout-confirmation');
  const form = page.locator('form[method="post" i]').first();
  assert.equal(await form.count(), 1, 'no POST form on the confirmation page');
  const mark = await lib.mockLogMark(demo);
  await form.locator('button, input[type="submit"]').first().click();
  await page.waitForURL((u) => u.origin === origin(demo.base.a) && u.pathname !== '/sesame/logout');
  const ends = (await lib.mockLogSince(demo, mark)).filter((e) => e.endpoint === 'session_end');
  assert.equal(ends.length, 1, 'the browser did not go through the provider\'s end-session endpoint');
  assert.equal(ends[0].id_token_hint_valid, true, 'end-session without a valid id_token_hint');
  assert.equal(ends[0].outcome, 'logged_out');
  if (new URL(page.url()).pathname.startsWith('/sesame/')) {
    await checkSesamePage(page, watch, 'signed-out');
  } else {
    await checkPortalPage(page, 'signed-out');
  }
  passed.add('signed out');
});

test('after signing out, /demarches asks to sign in again', STEP_TIMEOUT, async () => {
  needs('signed out');
  await marie.page.goto(`${demo.base.a}/demarches`);
  await expectSignInPage(marie.page, demo.base.a);
  await marie.context.close();
});

test('without JavaScript: sign in as jean by clicking through', STEP_TIMEOUT, async () => {
  const { context, page } = await openPage({ javaScriptEnabled: false });
  try {
    await page.goto(`${demo.base.a}/demarches`);
    await expectSignInPage(page, demo.base.a);
    await signIn(page, demo.base.a, 'jean', '/demarches');
    assert.equal(await page.locator('#greeting').innerText(), 'Bonjour Jean-Baptiste D\'ALMEIDA-LÉVÊQUE');
  } finally {
    await context.close();
  }
});

test('every test identity of the mock signs in at ville-b (desactive is refused by the provider)', STEP_TIMEOUT, async () => {
  const identities = lib.loadIdentities();
  assert.ok(identities.length >= 10, 'the identities file looks truncated');
  const { context, page, watch } = await openPage();
  try {
    for (const id of identities) {
      await context.clearCookies();
      await page.goto(`${demo.base.b}/demarches`);
      await expectSignInPage(page, demo.base.b);
      await fcButton(page).click();
      await pickIdentity(page, id.login);
      if (id.login === 'desactive') {
        await page.waitForURL((u) => u.origin === origin(demo.base.b));
        assert.ok(lastDocument(watch).status >= 400, 'desactive was let in');
        assert.equal(await page.locator('#greeting').count(), 0, 'desactive reached the service');
        continue;
      }
      await page.waitForURL((u) => u.origin === origin(demo.base.b) && u.pathname === '/demarches');
      assert.equal(await page.locator('#greeting').innerText(), `Bonjour ${id.given_name} ${id.family_name}`,
        `greeting of ${id.login}`);
      assert.match(await bodyText(page), new RegExp(id.birthdate), `birthdate of ${id.login}`);
    }
  } finally {
    await context.close();
  }
});

test('Ville d\'Arbre on three host names: signed in on one, the two others open signed in', STEP_TIMEOUT, async () => {
  // scripts/demo gives ville-a three host names and no cookie_domain: each host name has its own
  // cookie, and Sésame carries the sign-in from one to the others (its hops through the
  // public_url's host, where the FranceConnect callback is registered) without the provider.
  const [first, www, services] = demo.baseA;
  const origins = demo.baseA.map(origin);
  const { context, page, watch } = await openPage();
  try {
    const mark = await lib.mockLogMark(demo);
    await page.goto(`${www}/demarches`);
    await fcButton(page).waitFor({ state: 'visible' });
    const at = new URL(page.url());
    assert.ok(origins.includes(at.origin) && at.pathname.startsWith('/sesame/'),
      `expected Sésame's sign-in page of Ville d'Arbre, got ${page.url()}`);
    await fcButton(page).click();
    await pickIdentity(page, 'paola');
    await page.waitForURL((u) => u.origin === origin(www) && u.pathname === '/demarches');
    assert.equal(lastDocument(watch).status, 200);
    assert.equal(await page.locator('#greeting').innerText(), 'Bonjour Paola Maria SANTUCCI');
    assert.match(await page.locator('header').innerText(), /Ville d'Arbre/);
    const signedIn = recorder.urls.length;
    for (const [base, path] of [[services, '/cantine'], [first, '/demarches'], [services, '/demarches']]) {
      const resp = await page.goto(`${base}${path}`);
      const u = new URL(page.url());
      assert.equal(`${u.origin}${u.pathname}`, `${origin(base)}${path}`, `${base}${path} ended on ${page.url()}`);
      assert.equal(resp.status(), 200, `${base}${path}`);
      assert.equal(await page.locator('#greeting').innerText(), 'Bonjour Paola Maria SANTUCCI',
        `${base}${path} does not show the signed-in identity`);
      assert.match(await page.locator('header').innerText(), /Ville d'Arbre/);
    }
    const again = recorder.urls.slice(signedIn).filter((u) => origin(u) === demo.fcOrigin);
    assert.deepEqual(again, [], 'the other host names went to the mock FranceConnect again');
    const authorizations = (await lib.mockLogSince(demo, mark)).filter((e) => e.endpoint === 'authorize');
    assert.equal(authorizations.length, 1, 'more than one authorization at the provider for the three host names');
    const cookies = await context.cookies(demo.baseA);
    for (const host of demo.hostsA) {
      assert.ok(cookies.some((c) => c.name === 'sesame' && c.domain === host),
        `no host-only session cookie on ${host}: ${cookies.map((c) => `${c.name}@${c.domain}`).join(' ')}`);
    }
  } finally {
    await context.close();
  }
});

// ---------------------------------------------------------------- the territory

function accountOf(page) {
  return page.locator('dl.identity dt:has-text("X-Sesame-Account") + dd').innerText();
}

test('territory: this journey\'s Chromium blocks third-party cookies', STEP_TIMEOUT, async () => {
  paola.browser = await lib.launchBlockingContext(recorder);
  paola.context = paola.browser.context;
  assert.equal(await lib.thirdPartyCookieSent(paola.context, recorder), false,
    'a SameSite=None cookie went with a cross-site request: third-party cookies are not blocked');
  paola.page = await paola.context.newPage();
  paola.watch = lib.watchPage(paola.page);
  passed.add('territory browser');
});

test('territory: a commune sends the citizen to the territory\'s sign-in page, which names its communes', STEP_TIMEOUT, async () => {
  needs('territory browser');
  const { page, watch } = paola;
  await page.goto(`${demo.base.cerisier}/demarches`);
  await expectSignInPage(page, demo.base.territory);
  assert.equal(lastDocument(watch).status, 200);
  const text = await bodyText(page);
  assert.match(text, /Agglomération d'Exemple/);
  const communes = await page.locator('ul.communes li').allInnerTexts();
  assert.deepEqual(communes, lib.TERRITORY_COMMUNES.map((c) => c.name),
    'the sign-in page does not name the territory\'s communes');
  await checkSesamePage(page, watch, 'territory-sign-in');
  passed.add('territory sign-in page');
});

test('territory: paola signs in once, at the territory, and is back on the commune', STEP_TIMEOUT, async () => {
  needs('territory sign-in page');
  const { page } = paola;
  paola.mark = await lib.mockLogMark(demo);
  await signIn(page, demo.base.cerisier, 'paola', '/demarches');
  assert.equal(lastDocument(paola.watch).status, 200);
  assert.equal(await page.locator('#greeting').innerText(), 'Bonjour Paola Maria SANTUCCI');
  assert.match(await page.locator('header').innerText(), /Mairie de Cerisier/);
  paola.accounts = { cerisier: await accountOf(page) };
  const tokens = (await lib.mockLogSince(demo, paola.mark)).filter((e) => e.endpoint === 'token');
  assert.deepEqual(tokens.map((e) => [e.client_id, e.outcome]), [['demo-agglo', 'ok']],
    'the sign-in did not go through the territory\'s registration');
  passed.add('territory signed in');
});

test('territory: the other commune, on its own domain, opens without signing in again', STEP_TIMEOUT, async () => {
  needs('territory signed in');
  const { page, context } = paola;
  const mark = recorder.urls.length;
  for (const path of ['/demarches', '/cantine']) {
    const resp = await page.goto(`${demo.base.saules}${path}`);
    const u = new URL(page.url());
    assert.equal(`${u.origin}${u.pathname}`, `${origin(demo.base.saules)}${path}`, `ended on ${page.url()}`);
    assert.equal(resp.status(), 200);
    assert.equal(await page.locator('#greeting').innerText(), 'Bonjour Paola Maria SANTUCCI');
    assert.match(await page.locator('header').innerText(), /Ville des Saules/);
  }
  await page.goto(`${demo.base.saules}/demarches`);
  paola.accounts.saules = await accountOf(page);
  assert.notEqual(paola.accounts.saules, paola.accounts.cerisier,
    'both communes received the same account id: each must map the citizen to its own account');
  const since = recorder.urls.slice(mark);
  assert.deepEqual(since.filter((u) => origin(u) === demo.fcOrigin), [], 'Ville des Saules went to the provider again');
  assert.ok(since.some((u) => origin(u) === origin(demo.base.territory) && new URL(u).pathname === '/sesame/sso'),
    'the hand-off did not go through the territory\'s host');
  const authorizations = (await lib.mockLogSince(demo, paola.mark)).filter((e) => e.endpoint === 'authorize');
  assert.equal(authorizations.length, 1, 'more than one authorization at the provider for the two communes');
  const cookies = await context.cookies([demo.base.territory, demo.base.cerisier, demo.base.saules]);
  for (const host of [lib.TERRITORY_HOST, ...lib.TERRITORY_COMMUNES.map((c) => c.host)]) {
    assert.ok(cookies.some((c) => c.name === 'sesame' && c.domain === host),
      `no host-only session cookie on ${host}: ${cookies.map((c) => `${c.name}@${c.domain}`).join(' ')}`);
  }
  passed.add('territory communes');
});

test('territory: signing out of one commune signs out of both', STEP_TIMEOUT, async () => {
  needs('territory communes');
  const { page, watch } = paola;
  await page.goto(`${demo.base.saules}/demarches`);
  await page.getByRole('link', { name: 'Se déconnecter' }).click();
  await page.waitForURL((u) => u.origin === origin(demo.base.saules) && u.pathname === '/sesame/logout');
  await checkSesamePage(page, watch, 'territory-logout-confirmation');
  const mark = await lib.mockLogMark(demo);
  await page.locator('form[method="post" i]').first().locator('button, input[type="submit"]').first().click();
  // the provider sends the browser back to the territory's host, which shows the signed-out page
  // of the commune left, on its own host
  await page.waitForURL((u) => u.origin === origin(demo.base.saules) && u.pathname.startsWith('/sesame/logout/callback'));
  assert.ok(recorder.urls.some((u) => origin(u) === origin(demo.base.territory) && new URL(u).pathname === '/sesame/logout/callback'),
    'the provider did not send the browser back to the territory\'s post-logout URI');
  const ends = (await lib.mockLogSince(demo, mark)).filter((e) => e.endpoint === 'session_end');
  assert.deepEqual(ends.map((e) => [e.client_id, e.id_token_hint_valid, e.outcome]), [['demo-agglo', true, 'logged_out']],
    'the provider\'s end-session was not called with the territory session\'s ID token');
  assert.match(await bodyText(page), /connexion est terminée/i);
  assert.match(await page.locator('header').innerText(), /Ville des Saules/);
  await checkSesamePage(page, watch, 'territory-commune-signed-out');
  // the territory's own signed-out page (a logout started there ends there)
  await page.goto(`${demo.base.territory}/sesame/logout/callback`);
  assert.match(await page.locator('header').innerText(), /Agglomération d'Exemple/);
  await checkSesamePage(page, watch, 'territory-signed-out');
  for (const c of lib.TERRITORY_COMMUNES) {
    await page.goto(`${demo.base[c.key]}/demarches`);
    await expectSignInPage(page, demo.base.territory);
  }
});

// Nothing lost on re-login (gate/replay.h): the session ends while a form is being filled; the
// submission goes through a new sign-in and reaches the portal once, byte for byte. With
// JavaScript on, the kept page sends it by itself (its one script, allowed by its hash); without,
// its button does.
const MOTIF = 'Acte de naissance pour ma fille, né·e le 3 mars — envoi par courrier & rapide';
const receivedForms = async () => (await fetch(`http://127.0.0.1:${demo.ports.portal}/__received`)).json();

// Signs in, fills the form, ends the session in Redis, submits, signs in again: the browser is on
// its way to <prefix>resume. Returns the number of POSTs the portal had before.
async function keptFormJourney(page) {
  await page.goto(`${demo.base.a}/demarches/formulaire`);
  await expectSignInPage(page, demo.base.a);
  await signIn(page, demo.base.a, 'marie', '/demarches/formulaire');
  await page.locator('#motif').fill(MOTIF);
  // the session expires meanwhile: its record deleted in Redis, the caches told
  const cli = (...args) => spawnSync('redis-cli', ['-p', String(demo.ports.redis), ...args], { encoding: 'utf8' });
  const keys = cli('--scan', '--pattern', 'demo:s:*').stdout.split('\n').filter(Boolean);
  assert.ok(keys.length > 0, 'no session in Redis');
  for (const k of keys) {
    cli('DEL', k);
    cli('PUBLISH', 'demo:revoked', k.slice('demo:s:'.length));
  }
  const before = (await receivedForms()).length;
  await page.locator('#envoyer').click();
  await expectSignInPage(page, demo.base.a);
  await fcButton(page).click();
  await pickIdentity(page, 'marie');
  return before;
}

// The portal got the form once, as typed, with an identity; the kept page's id is then gone.
async function expectSentOnce(page, before, id) {
  // the answer of the portal to the original POST, shown at <prefix>resume
  await page.getByText(/Votre demande a bien été reçue/).waitFor();
  assert.ok((await bodyText(page)).includes(MOTIF), 'the portal did not get what was typed');
  const after = (await receivedForms()).slice(before);
  assert.equal(after.length, 1, `the portal received ${after.length} POSTs`);
  assert.equal(after[0].body, new URLSearchParams({ motif: MOTIF }).toString());
  assert.match(after[0].content_type, /^application\/x-www-form-urlencoded/);
  assert.ok(after[0].account, 'the resent form carried no identity');
  // it is gone: the same browser cannot send it again
  const again = await page.goto(`${demo.base.a}/sesame/resume?id=${id}`);
  assert.equal(again.status(), 400);
  assert.match(await bodyText(page), /n'est plus disponible/);
  assert.equal((await receivedForms()).length, before + 1);
}

// The kept page's only script is allowed by its Content-Security-Policy through its SHA-256, and
// no other source of script is.
function checkKeptPageScript(html, csp) {
  const scripts = [...html.matchAll(/<script\b[^>]*>([\s\S]*?)<\/script>/gi)];
  assert.equal(scripts.length, 1, `the kept page has ${scripts.length} scripts`);
  assert.doesNotMatch(scripts[0][0], /<script\s+src/i);
  const hash = createHash('sha256').update(scripts[0][1], 'utf8').digest('base64');
  const scriptSrc = (csp.split(';').map((d) => d.trim()).find((d) => d.startsWith('script-src ')) || '');
  assert.equal(scriptSrc, `script-src 'sha256-${hash}'`, `the kept page's CSP does not allow its script: "${csp}"`);
}

test('a form sent after the session ended is kept across the new sign-in and sent by itself, once', STEP_TIMEOUT, async () => {
  const { context, page, watch } = await openPage();
  try {
    let kept = null;
    page.on('response', async (resp) => {
      const u = new URL(resp.url());
      if (u.pathname === '/sesame/resume' && resp.request().method() === 'GET' && kept === null) {
        kept = { url: resp.url(), headers: resp.headers(), html: resp.text().catch(() => '') };
      }
    });
    const before = await keptFormJourney(page);
    // no click: the kept page's script sends the form on load, and the portal answers
    await page.getByText(/Votre demande a bien été reçue/).waitFor();
    assert.ok(kept, 'the browser did not go through the kept page');
    checkKeptPageScript(await kept.html, kept.headers['content-security-policy'] || '');
    const cspErrors = watch.consoleErrors.filter((t) => /Content Security Policy/i.test(t));
    assert.deepEqual(cspErrors, [], 'the kept page breaks its own Content-Security-Policy');
    await expectSentOnce(page, before, new URL(kept.url).searchParams.get('id'));
    // the page that came after carries no script-src: only the kept page may run its script
    assert.doesNotMatch(lastDocument(watch).headers['content-security-policy'] || '', /script-src/);
  } finally {
    await context.close();
  }
});

test('without JavaScript, the kept form is sent by its button, once', STEP_TIMEOUT, async () => {
  const { context, page, watch } = await openPage({ javaScriptEnabled: false });
  try {
    const before = await keptFormJourney(page);
    await page.waitForURL((u) => u.origin === demo.base.a && u.pathname === '/sesame/resume');
    assert.match(await bodyText(page), /Votre saisie a été conservée/);
    checkKeptPageScript(await page.content(), lastDocument(watch).headers['content-security-policy'] || '');
    // checkSesamePage's axe-core needs JavaScript in the page (it hangs without): the headers,
    // lang and screenshot only here
    const doc = lastDocument(watch);
    assert.match(doc.headers['content-security-policy'] || '', /default-src 'none'/);
    assert.equal(doc.headers['x-content-type-options'], 'nosniff');
    assert.equal(await page.locator('html').getAttribute('lang'), 'fr');
    await page.screenshot({ path: `${lib.OUT}/post-kept-nojs-1280.png`, fullPage: true });
    assert.equal((await receivedForms()).length, before, 'the form reached the portal before the citizen sent it');
    const id = new URL(page.url()).searchParams.get('id');
    await page.getByRole('button', { name: /Envoyer ma saisie/ }).click();
    await expectSentOnce(page, before, id);
  } finally {
    await context.close();
  }
});

test('no request left for a host other than the demo\'s', STEP_TIMEOUT, async () => {
  assert.ok(recorder.urls.length > 0, 'no request was recorded');
  assert.deepEqual(recorder.foreign, [], 'requests to foreign hosts were attempted');
  const others = recorder.urls.filter((u) => lib.isForeign(recorder, u));
  assert.deepEqual(others, []);
});
