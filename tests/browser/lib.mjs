// Helpers of the browser tests: the demo's processes, Chromium, axe-core, screenshots.
//
// startDemo() -> demo: runs `scripts/demo --background --no-build` on four free loopback ports
//   with its own state directory (never the developer's .demo/), and returns
//   {dir, env, ports: {sesame, portal, fc, redis}, base: {a, b} (tenant URLs), hostsA (ville-a's
//   three host names, the public_url's first), baseA (a URL for each), fcOrigin, caFile}.
//   stopDemo(demo) runs `scripts/demo --stop` for it (idempotent, synchronous, so it also works
//   from an exit handler) and copies the demo's logs under the output directory.
// launchBrowser() -> a playwright Browser: Debian's /usr/bin/chromium, headless, no network
//   features of its own; playwright gives each launch a fresh temporary --user-data-dir.
// launchBlockingContext(recorder, options) -> {context, close}: a Chromium of its own whose
//   profile blocks third-party cookies (the "Block third-party cookies" setting, written in its
//   Preferences, plus --test-third-party-cookie-phaseout), recording and filtering requests as
//   newContext does. thirdPartyCookieSent(context, recorder) -> whether that browser sends a
//   SameSite=None cookie with a cross-site subresource request (a probe against a local server
//   on two *.localhost names): false when third-party cookies are blocked.
// newContext(browser, recorder, options) -> BrowserContext that accepts the mock's test
//   certificate, records every request URL in recorder.urls and aborts (and records in
//   recorder.foreign) any request to an origin not in recorder.allowed.
// checkPage(page, name) -> {1280: violations, 320: violations}: screenshots
//   OUT/<name>-<width>.png (full page) and runs axe-core (WCAG 2.0/2.1 A and AA tags) at both
//   widths. axe is injected through the DevTools protocol (page.evaluate), which the page's
//   Content-Security-Policy does not block, so pages are checked under their real CSP.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const TOP = path.resolve(HERE, '..', '..');
export const OUT = path.resolve(process.env.SESAME_BROWSER_OUT || path.join(TOP, 'test-output', 'browser'));
const AXE_SOURCE = fs.readFileSync(path.join(HERE, 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');
const AXE_TAGS = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'];
export const WIDTHS = [1280, 320];
// The host names scripts/demo gives Ville d'Arbre (no cookie_domain: one cookie per host name).
export const VILLE_A_HOSTS = ['ville-a.localhost', 'www.ville-a.localhost', 'services.ville-a.localhost'];
// The territory of the demo (conf/demo.conf [territory agglo]): its sign-in host and its two
// communes, each on a registrable domain of its own.
export const TERRITORY_HOST = 'connexion.agglo-exemple.localhost';
export const TERRITORY_COMMUNES = [
  { key: 'cerisier', host: 'mairie-cerisier.localhost', name: 'Mairie de Cerisier' },
  { key: 'saules', host: 'ville-saules.localhost', name: 'Ville des Saules' },
];

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function freePorts(n) {
  const ports = new Set();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

export async function startDemo() {
  fs.mkdirSync(OUT, { recursive: true });
  const [sesame, portal, fc, redis] = await freePorts(4);
  // SESAME_BROWSER_DEMO_DIR: an empty directory chosen by the caller (scripts/test-browser, which
  // then also runs `scripts/demo --stop` on it when the test process dies).
  const dir = process.env.SESAME_BROWSER_DEMO_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'sesame-browser-'));
  fs.mkdirSync(dir, { recursive: true });
  const env = {
    ...process.env,
    SESAME_DEMO_DIR: dir,
    SESAME_DEMO_PORT: String(sesame),
    SESAME_DEMO_PORTAL_PORT: String(portal),
    SESAME_DEMO_FC_PORT: String(fc),
    SESAME_DEMO_REDIS_PORT: String(redis),
    SESAME_BUILDDIR: process.env.SESAME_BUILDDIR || path.join(TOP, 'build'),
  };
  const demo = {
    dir, env, ports: { sesame, portal, fc, redis },
    base: {
      a: `http://ville-a.localhost:${sesame}`, b: `http://ville-b.localhost:${sesame}`,
      territory: `http://${TERRITORY_HOST}:${sesame}`,
      ...Object.fromEntries(TERRITORY_COMMUNES.map((c) => [c.key, `http://${c.host}:${sesame}`])),
    },
    hostsA: VILLE_A_HOSTS,
    baseA: VILLE_A_HOSTS.map((h) => `http://${h}:${sesame}`),
    fcOrigin: `https://127.0.0.1:${fc}`,
    caFile: path.join(dir, 'pki', 'ca.pem'),
    stopped: false,
  };
  const run = spawnSync(path.join(TOP, 'scripts', 'demo'), ['--background', '--no-build'],
    { env, encoding: 'utf8', timeout: 180000 });
  fs.writeFileSync(path.join(OUT, 'demo-start.out'), `${run.stdout || ''}${run.stderr || ''}`);
  if (run.status !== 0) {
    stopDemo(demo);
    throw new Error(`scripts/demo --background failed (exit ${run.status}):\n${run.stdout}\n${run.stderr}`);
  }
  return demo;
}

export function stopDemo(demo) {
  if (!demo || demo.stopped) return;
  demo.stopped = true;
  spawnSync(path.join(TOP, 'scripts', 'demo'), ['--stop'], { env: demo.env, stdio: 'ignore', timeout: 60000 });
  const logs = path.join(demo.dir, 'logs');
  if (fs.existsSync(logs)) {
    const dest = path.join(OUT, 'demo-logs');
    fs.rmSync(dest, { recursive: true, force: true });
    fs.cpSync(logs, dest, { recursive: true });
  }
  if (!process.env.SESAME_BROWSER_DEMO_DIR) fs.rmSync(demo.dir, { recursive: true, force: true });
}

export function launchBrowser() {
  return chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
}

export function newRecorder(demo) {
  const allowed = new Set([...Object.values(demo.base).map((u) => new URL(u).origin), demo.fcOrigin,
    ...demo.baseA.map((u) => new URL(u).origin)]);
  return { allowed, urls: [], foreign: [] };
}

// True for a network URL (http, https, ws, wss) whose origin is not one of the demo's.
export function isForeign(recorder, url) {
  const u = typeof url === 'string' ? new URL(url) : url;
  return /^(https?|wss?):$/.test(u.protocol) && !recorder.allowed.has(u.origin);
}

const CONTEXT_OPTIONS = {
  ignoreHTTPSErrors: true, // the mock FranceConnect's throw-away test authority
  locale: 'fr-FR',
  viewport: { width: 1280, height: 900 },
};

async function recordRequests(context, recorder) {
  context.setDefaultTimeout(20000);
  context.on('request', (req) => recorder.urls.push(req.url()));
  await context.route((url) => isForeign(recorder, url), (route) => {
    recorder.foreign.push(route.request().url());
    return route.abort('blockedbyclient');
  });
  return context;
}

export async function newContext(browser, recorder, options = {}) {
  const context = await browser.newContext({ ...CONTEXT_OPTIONS, ...options });
  return recordRequests(context, recorder);
}

export async function launchBlockingContext(recorder, options = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sesame-chromium-'));
  fs.mkdirSync(path.join(dir, 'Default'), { recursive: true });
  // cookie_controls_mode 1: "Block third-party cookies" in chrome://settings/cookies
  fs.writeFileSync(path.join(dir, 'Default', 'Preferences'), JSON.stringify({
    profile: { cookie_controls_mode: 1, block_third_party_cookies: true },
  }));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: '/usr/bin/chromium', headless: true,
    args: [...CHROMIUM_ARGS, '--test-third-party-cookie-phaseout'],
    ...CONTEXT_OPTIONS, ...options,
  });
  await recordRequests(context, recorder);
  return {
    context,
    close: async () => {
      try {
        await context.close();
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

export async function thirdPartyCookieSent(context, recorder) {
  const seen = [];
  const srv = http.createServer((req, res) => {
    seen.push({ url: req.url, cookie: req.headers.cookie || '' });
    if (req.url === '/set') {
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Set-Cookie': 'probe=1; Path=/; SameSite=None; Secure' });
      res.end('ok');
    } else if (req.url === '/page') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(`<!DOCTYPE html><html lang="fr"><title>sonde</title><img alt="" src="http://probe-b.localhost:${srv.address().port}/pixel">`);
    } else {
      res.writeHead(200, { 'Content-Type': 'image/gif' });
      res.end(Buffer.from('R0lGODlhAQABAAAAACw=', 'base64'));
    }
  });
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address();
  const a = `http://probe-a.localhost:${port}`;
  const b = `http://probe-b.localhost:${port}`;
  recorder.allowed.add(a); // (they stay allowed: the probe's requests are in recorder.urls)
  recorder.allowed.add(b);
  const page = await context.newPage();
  try {
    await page.goto(`${b}/set`);
    await page.goto(`${b}/first-party`);
    await page.goto(`${a}/page`);
    await page.waitForLoadState('networkidle');
    const first = seen.find((s) => s.url === '/first-party');
    const pixel = seen.find((s) => s.url === '/pixel');
    if (!first || !first.cookie.includes('probe=1')) throw new Error('the probe cookie was not even set first-party');
    if (!pixel) throw new Error('the cross-site probe request was not made');
    return pixel.cookie.includes('probe=1');
  } finally {
    await page.close();
    srv.closeAllConnections();
    await new Promise((resolve) => srv.close(resolve));
  }
}

// Records the main frame's document responses of a page, and its console errors.
export function watchPage(page) {
  const w = { documents: [], consoleErrors: [] };
  page.on('response', (resp) => {
    if (resp.request().isNavigationRequest() && resp.frame() === page.mainFrame()) {
      w.documents.push({ url: resp.url(), status: resp.status(), headers: resp.headers() });
    }
  });
  page.on('console', (msg) => { if (msg.type() === 'error') w.consoleErrors.push(msg.text()); });
  page.on('pageerror', (err) => w.consoleErrors.push(String(err)));
  return w;
}

export async function runAxe(page) {
  const hasAxe = await page.evaluate('typeof window.axe === "object"');
  if (!hasAxe) await page.evaluate(AXE_SOURCE);
  return page.evaluate(async (tags) => {
    const result = await window.axe.run(document, { runOnly: { type: 'tag', values: tags } });
    return result.violations.map((v) => ({
      id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5),
    }));
  }, AXE_TAGS);
}

export async function checkPage(page, name) {
  fs.mkdirSync(OUT, { recursive: true });
  const original = page.viewportSize();
  const found = {};
  try {
    for (const width of WIDTHS) {
      await page.setViewportSize({ width, height: width >= 1000 ? 900 : 720 });
      await page.screenshot({ path: path.join(OUT, `${name}-${width}.png`), fullPage: true });
      found[width] = await runAxe(page);
    }
  } finally {
    if (original) await page.setViewportSize(original);
  }
  return found;
}

export function formatViolations(found) {
  const lines = [];
  for (const [width, list] of Object.entries(found)) {
    for (const v of list) lines.push(`${width}px ${v.id} (${v.impact}): ${v.help} at ${v.nodes.join(', ')}`);
  }
  return lines.join('\n');
}

// The mock's request log: mockLogMark(demo) -> the last sequence number; mockLogSince(demo, mark)
// -> the entries recorded after it ({endpoint, client_id, outcome, ...}, see mockfc.py).
export async function mockLogMark(demo) {
  const log = await mockControl(demo, 'log');
  return log.length ? log[log.length - 1].seq : 0;
}

export function mockLogSince(demo, mark) {
  return mockControl(demo, `log?since=${mark}`);
}

// The mock FranceConnect's test identities (tests/mockfc/fc-test-identities.csv): a list of
// {login, given_name, family_name, birthdate, case}. No field but the last holds a comma.
export function loadIdentities() {
  const file = path.join(TOP, 'tests', 'mockfc', 'fc-test-identities.csv');
  return fs.readFileSync(file, 'utf8').split('\n')
    .filter((l) => l.trim() && !l.startsWith('#'))
    .map((l) => {
      const f = l.split(',');
      return { login: f[0], given_name: f[1], family_name: f[2], birthdate: f[5], case: f.slice(10).join(',') };
    });
}

// GET on the mock FranceConnect's test controls (verified against its test CA).
export function mockControl(demo, name) {
  return new Promise((resolve, reject) => {
    const req = https.request(`${demo.fcOrigin}/__mock/${name}`, {
      ca: fs.readFileSync(demo.caFile), timeout: 10000,
    }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => {
        try { resolve(JSON.parse(body)); } catch (e) { reject(e); }
      });
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('mock control timed out')));
    req.end();
  });
}
