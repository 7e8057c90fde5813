// Accessibility: axe-core (pinned in package.json) checks every page against
// WCAG 2.1 A and AA rules, in the light and the dark colour scheme: names and
// labels, landmarks, ARIA use, contrast.  The page's CSP refuses injected
// scripts, so this file's browser bypasses it (the other files keep it).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { launchBrowser, withGppd, signIn, submitJob, ensureDataset } from './harness.mjs';

const axePath = createRequire(import.meta.url).resolve('axe-core/axe.min.js');
let light;
let dark;
before(async () => {
  light = await launchBrowser({ bypassCSP: true });
  dark = await launchBrowser({ bypassCSP: true, colorScheme: 'dark' });
});
after(async () => {
  if (light) await light.close();
  if (dark) await dark.close();
});

/** Run axe on the page; returns the violations as readable lines. */
async function audit(page, where) {
  await page.addScriptTag({ path: axePath });
  const res = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
  });
  return res.map((v) => `${where}: ${v.id} (${v.impact}) ${v.help} at ${v.nodes.join(', ')}`);
}

for (const scheme of ['light', 'dark']) {
  test(`every page passes axe's WCAG 2.1 A/AA rules (${scheme})`, async () => {
    await withGppd(scheme === 'light' ? light : dark, `a11y-${scheme}`, async (page, gppd) => {
      await ensureDataset(gppd);
      const a = await submitJob(gppd, { dataset: 'fashion-mnist', model: 'lenet5', name: 'first', iterations: 1 });
      const b = await submitJob(gppd, { dataset: 'fashion-mnist', model: 'lenet5', name: 'second' });
      await apiCancel(gppd, b.id);
      const found = [];

      await page.goto(gppd.url + '/');
      await page.getByRole('heading', { name: 'Sign in to gppd' }).waitFor();
      await page.getByLabel('Access token').fill('wrong');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await page.locator('#signin-error', { hasText: 'not accepted' }).waitFor();
      found.push(...await audit(page, 'sign-in with an error'));

      await signIn(page, gppd);
      await page.locator('table.jobs-table tbody tr').nth(1).waitFor();
      found.push(...await audit(page, 'jobs'));

      await page.goto(`${gppd.url}/#/jobs/${a.id}`);
      await page.locator('ol.timeline > li.stage').first().waitFor();
      await page.locator('.log-line').first().waitFor();
      found.push(...await audit(page, 'job'));

      await page.goto(`${gppd.url}/#/submit`);
      await page.locator('details[data-section="prune"] > summary').click();
      await page.locator('[name="prune.ratio"]').fill('1.5');
      await page.getByRole('button', { name: 'Submit job' }).click();
      await page.locator('#f-prune-ratio-error').waitFor();
      found.push(...await audit(page, 'submit with a field error'));

      await page.goto(`${gppd.url}/#/workers`);
      await page.getByText('No workers have connected yet.').waitFor();
      found.push(...await audit(page, 'workers'));

      await page.goto(`${gppd.url}/#/models`);
      await page.getByText('You have not uploaded a trained model yet.').waitFor();
      found.push(...await audit(page, 'models'));

      await page.goto(`${gppd.url}/#/compare?ids=${a.id},${b.id}`);
      await page.locator('.compare-table tbody tr').nth(1).waitFor();
      found.push(...await audit(page, 'compare'));

      assert.deepEqual(found, []);
    });
  });
}

async function apiCancel(gppd, id) {
  const res = await fetch(`${gppd.url}/api/v1/jobs/${id}/cancel`, { method: 'POST', headers: { Authorization: `Bearer ${gppd.token}` } });
  assert.equal(res.status, 202);
}
