// End-to-end tests of Sésame in headless Chromium, against the demo (scripts/demo --background on
// free ports): a citizen signs in with the mock FranceConnect, moves between services, is refused
// an adults-only service, cancels at the provider, signs out, opens the commune's other host names
// signed in; every page Sésame serves is checked with axe-core (WCAG 2.1 A/AA) at 1280 and 320 px
// and screenshotted under test-output/browser/.
//
// The steps share the browser and marie's signed-in context, in order. A step whose prerequisite
// step failed fails too, naming it (nothing is skipped).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as lib from './lib.mjs';

const FC_BUTTON = /identifier avec\s*FranceConnect/i;
const STEP_TIMEOUT = { timeout: 180000 };

let demo;
let browser;
let recorder;
const marie = {};      // context, page, watch: the citizen of the main journey
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

// A page Sésame serves itself: security headers, no script, no CSP violation, zero axe
// violations at both widths, screenshots.
async function checkSesamePage(page, watch, name) {
  const doc = lastDocument(watch);
  const csp = doc.headers['content-security-policy'] || '';
  assert.match(csp, /default-src 'none'/, `${name}: Content-Security-Policy missing or lax: "${csp}"`);
  assert.equal(doc.headers['x-content-type-options'], 'nosniff', `${name}: X-Content-Type-Options`);
  assert.equal(await page.locator('script').count(), 0, `${name}: the page has a <script>`);
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

test('no request left for a host other than the demo\'s', STEP_TIMEOUT, async () => {
  assert.ok(recorder.urls.length > 0, 'no request was recorded');
  assert.deepEqual(recorder.foreign, [], 'requests to foreign hosts were attempted');
  const others = recorder.urls.filter((u) => lib.isForeign(recorder, u));
  assert.deepEqual(others, []);
});
