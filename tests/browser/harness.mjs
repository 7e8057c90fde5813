// Shared pieces of the browser tests: a real gppd per test (127.0.0.1, port
// 0, a temporary data folder, --web-root), Debian's chromium driven by
// playwright-core with a fresh profile, page guards (no uncaught errors, no
// request leaving the daemon's origin), screenshots, and small API helpers
// for setting up state the test is not about.
//
// Environment (set by tests/browser/meson.build):
//   GPPD_EXE          the built gppd
//   GPPD_WEB_ROOT     the dashboard folder (web/)
//   GPPD_SCREENSHOTS  where screenshots go (BUILD/browser-screenshots)
//   CHROMIUM          the browser (default /usr/bin/chromium)

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');

export const GPPD_EXE = process.env.GPPD_EXE || path.join(repo, 'build', 'daemon', 'gppd');
export const WEB_ROOT = process.env.GPPD_WEB_ROOT || path.join(repo, 'web');
export const SHOTS = process.env.GPPD_SCREENSHOTS || path.join(repo, 'build', 'browser-screenshots');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export const PHONE = { width: 375, height: 800 };
export const DESKTOP = { width: 1280, height: 900 };

/**
 * Start gppd on a free loopback port with a fresh data folder.  Resolves to
 * {url, port, token, dataDir, log(), stop()} once it logs its listening line.
 */
export async function startGppd(extraArgs = []) {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'gppd-browser-'));
  const args = [
    '--listen', '127.0.0.1:0',
    '--worker-listen', '127.0.0.1:0',
    '--data-dir', dataDir,
    '--web-root', WEB_ROOT,
    ...extraArgs,
  ];
  const proc = spawn(GPPD_EXE, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stdout.on('data', (b) => { log += b; });
  proc.stderr.on('data', (b) => { log += b; });
  const exited = new Promise((resolve) => proc.once('exit', (code, sig) => resolve({ code, sig })));

  // gppd logs: ts=... level=info msg="listening" http=127.0.0.1:PORT web_root=...
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gppd did not log "listening" within 15 s:\n${log}`)), 15000);
    const check = () => {
      const m = /msg="listening" http=(?:\[[^\]]*\]|[^\s:]+):(\d+)/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    proc.stderr.on('data', check);
    proc.stdout.on('data', check);
    exited.then(({ code, sig }) => {
      clearTimeout(timer);
      reject(new Error(`gppd exited (${code ?? sig}) before listening:\n${log}`));
    });
    check();
  });
  const token = readFileSync(path.join(dataDir, 'admin.token'), 'utf8').trim();
  const url = `http://127.0.0.1:${port}`;
  let stopped = false;
  return {
    url,
    port,
    token,
    dataDir,
    log: () => log,
    async stop() {
      if (stopped) return;
      stopped = true;
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 8000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Call gppd's API from the test (setting up state the test is not about). */
export async function apiCall(gppd, method, p, body, token = gppd.token) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(gppd.url + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  return { status: res.status, json, text };
}

/** Submit a job over the API; returns its JSON (throws unless 201). */
export async function submitJob(gppd, spec, token) {
  const r = await apiCall(gppd, 'POST', '/api/v1/jobs', spec, token);
  if (r.status !== 201) throw new Error(`submit: HTTP ${r.status} ${r.text}`);
  return r.json;
}

/**
 * A persistent chromium context with a fresh profile folder.  opts:
 * {bypassCSP, colorScheme} (bypassCSP only where a test injects a checker
 * script, which the page's own policy would refuse).
 */
export async function launchBrowser(opts = {}) {
  const userDataDir = mkdtempSync(path.join(tmpdir(), 'gppd-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run', '--disable-quic', '--disable-sync'],
    viewport: DESKTOP,
    colorScheme: opts.colorScheme || 'light',
    reducedMotion: 'reduce',
    bypassCSP: !!opts.bypassCSP,
  });
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/**
 * A new page with guards: uncaught page errors, console errors other than
 * failed resource loads (the API's 401/404/422 answers are expected in
 * tests), and any request to another origin are recorded; check() throws
 * if there were any.
 */
export async function openPage(browser, gppd, viewport = DESKTOP) {
  const page = await browser.context.newPage();
  await page.setViewportSize(viewport);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) problems.push(`console error: ${m.text()}`);
  });
  page.on('request', (req) => {
    const u = req.url();
    if (!u.startsWith(gppd.url + '/') && !u.startsWith('blob:') && !u.startsWith('data:')) {
      problems.push(`request left the daemon: ${u}`);
    }
  });
  page.check = () => {
    if (problems.length) throw new Error(problems.join('\n'));
  };
  return page;
}

/** Sign in through the form with the given token (the admin token by default). */
export async function signIn(page, gppd, token = gppd.token, hash = '#/jobs') {
  await page.goto(`${gppd.url}/${hash}`);
  await page.getByLabel('Access token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForSelector('main[data-view]:not([data-view="signin"])');
}

/** Save a screenshot as SHOTS/NAME.png (full page). */
export async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, `${name}.png`);
  // From the top, so the sticky header sits where it belongs.
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** Horizontal overflow of the page in CSS pixels (0 when none). */
export async function horizontalOverflow(page) {
  return page.evaluate(() => Math.max(0, document.documentElement.scrollWidth - window.innerWidth,
    document.body.scrollWidth - window.innerWidth));
}

/**
 * Run body(page, gppd) with a fresh gppd and page; on failure save a
 * screenshot FAIL-<name>.png and add gppd's log to the error.  Always stops
 * gppd and closes the page.  workers: N starts gppd with --local-workers N
 * (real gpp-worker children: GPP_WORKER_BIN when set, else the build's
 * worker/gpp-worker beside daemon/gppd).
 */
export async function withGppd(browser, name, body, { viewport = DESKTOP, args = [], workers = 0 } = {}) {
  rmSync(path.join(SHOTS, `FAIL-${name}.png`), { force: true });
  const gppd = await startGppd(workers > 0 ? [...args, '--local-workers', String(workers)] : args);
  let page = null;
  try {
    page = await openPage(browser, gppd, viewport);
    await body(page, gppd);
    page.check();
  } catch (e) {
    if (page) await shot(page, `FAIL-${name}`).catch(() => {});
    e.message += `\n--- gppd log ---\n${gppd.log().split('\n').slice(-40).join('\n')}`;
    throw e;
  } finally {
    if (page) await page.close().catch(() => {});
    await gppd.stop();
  }
}

/** Why the browser tests cannot run here, or '' when they can. */
export function missingPrerequisite() {
  if (!existsSync(GPPD_EXE)) return `gppd not built at ${GPPD_EXE}`;
  if (!existsSync(CHROMIUM)) return `${CHROMIUM} not installed (deploy/install-deps.sh installs chromium)`;
  return '';
}

/**
 * Make sure a data set named `fashion-mnist` is registered.  gppd registers
 * it by itself when Debian's dataset-fashion-mnist is installed; elsewhere a
 * tiny IDX set (10 samples) is written into the data folder and registered
 * over the API, which is all a queued job needs.
 */
export async function ensureDataset(gppd) {
  const list = await apiCall(gppd, 'GET', '/api/v1/datasets');
  if (list.json && (list.json.datasets || []).some((d) => d.name === 'fashion-mnist')) return;
  const dir = path.join(gppd.dataDir, 'tiny-idx');
  mkdirSync(dir, { recursive: true });
  const n = 10;
  const be = (x) => Buffer.from([(x >>> 24) & 255, (x >>> 16) & 255, (x >>> 8) & 255, x & 255]);
  for (const split of ['train', 't10k']) {
    writeFileSync(path.join(dir, `${split}-images-idx3-ubyte`),
      Buffer.concat([be(0x803), be(n), be(28), be(28), Buffer.alloc(n * 28 * 28)]));
    writeFileSync(path.join(dir, `${split}-labels-idx1-ubyte`),
      Buffer.concat([be(0x801), be(n), Buffer.from([...Array(n).keys()])]));
  }
  const r = await apiCall(gppd, 'POST', '/api/v1/datasets', { name: 'fashion-mnist', format: 'idx', path: dir });
  if (r.status !== 201 && r.status !== 200) throw new Error(`registering a data set: HTTP ${r.status} ${r.text}`);
}
