// The workers page, keyboard-only use, and phone width.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  launchBrowser, withGppd, signIn, shot, submitJob, ensureDataset, horizontalOverflow, PHONE, apiCall,
} from './harness.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { if (browser) await browser.close(); });

test('the workers page renders', async () => {
  await withGppd(browser, 'workers', async (page, gppd) => {
    await signIn(page, gppd);
    await page.getByRole('link', { name: 'Workers', exact: true }).click();
    await page.getByRole('heading', { name: 'Workers', level: 1 }).waitFor();
    assert.equal(await page.locator('nav#nav a[aria-current="page"]').textContent(), 'Workers');
    // No worker has connected to this fresh daemon: the page says how to start one.
    await page.getByText('No workers have connected yet.').waitFor();
    assert.match(await page.locator('main').textContent(), /gpp-worker --connect/);
    assert.equal(await page.locator('table.workers-table').isVisible(), false);
    assert.equal((await apiCall(gppd, 'GET', '/api/v1/workers')).json.workers.length, 0);
    // The header shows the daemon's health.
    await page.locator('#health', { hasText: '0 workers' }).waitFor();
    await shot(page, 'workers-empty');
  });
});

test('keyboard alone signs in, reaches the submit button and submits', async () => {
  await withGppd(browser, 'keyboard', async (page, gppd) => {
    await ensureDataset(gppd);
    await page.goto(gppd.url + '/');
    await page.getByRole('heading', { name: 'Sign in to gppd' }).waitFor();
    await page.keyboard.type(gppd.token); // the token field has focus
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Jobs', level: 1 }).waitFor();

    /** Press Tab until pred(active element) holds; returns the number of presses. */
    const tabTo = async (pred, limit = 150) => {
      for (let i = 1; i <= limit; i++) {
        await page.keyboard.press('Tab');
        if (await page.evaluate(pred)) return i;
      }
      throw new Error(`Tab never reached the element (${limit} presses)`);
    };
    // After a navigation, focus is on the new page's heading.
    assert.equal(await page.evaluate(() => document.activeElement.tagName), 'H1');
    // On a fresh load the first Tab reaches the skip link, visible when
    // focused; it moves focus to the content without changing the route.
    await page.reload();
    await page.getByRole('heading', { name: 'Jobs', level: 1 }).waitFor();
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');
    assert.equal(await page.locator('.skip-link').isVisible(), true);
    await page.keyboard.press('Enter');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'main');
    assert.equal(await page.evaluate(() => location.hash), '#/jobs');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.closest('main') !== null), true);

    await tabTo(() => document.activeElement.matches('nav#nav a[data-route="submit"]'));
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Submit a job', level: 1 }).waitFor();
    // Focus is on the page heading after navigation.
    assert.equal(await page.evaluate(() => document.activeElement.tagName), 'H1');

    // Tab walks through every open field to the submit button.
    const presses = await tabTo(() => document.activeElement.id === 'submit-job');
    assert.ok(presses > 20, `only ${presses} presses: the form fields were skipped`);
    // The collapsed sections open from the keyboard too (Shift+Tab back to one).
    for (let i = 0; i < 10; i++) {
      await page.keyboard.press('Shift+Tab');
      if (await page.evaluate(() => document.activeElement.matches('details[data-section="prune"] > summary'))) break;
    }
    await page.keyboard.press('Enter');
    assert.equal(await page.locator('details[data-section="prune"]').getAttribute('open'), '');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement.name), 'prune.threshold');
    await tabTo(() => document.activeElement.id === 'submit-job');
    // Focus is visible on it.
    const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    assert.notEqual(outline, 'none');
    await shot(page, 'keyboard-submit-focus');
    await page.keyboard.press('Enter');
    await page.locator('ol.timeline > li.stage').first().waitFor();
    assert.equal((await apiCall(gppd, 'GET', '/api/v1/jobs')).json.jobs.length, 1);
  });
});

test('at phone width (375×800) no page scrolls sideways', async () => {
  await withGppd(browser, 'phone', async (page, gppd) => {
    await ensureDataset(gppd);
    const long = await submitJob(gppd, {
      dataset: 'fashion-mnist', model: 'lenet5',
      name: 'a-rather-long-job-name-that-could-push-the-layout-sideways-on-a-phone', iterations: 2,
    });
    await submitJob(gppd, { dataset: 'fashion-mnist', model: 'lenet300-100', name: 'mlp' });

    const check = async (name) => {
      await page.waitForTimeout(150); // layout settles (fonts, late rows)
      const over = await horizontalOverflow(page);
      await shot(page, `phone-${name}`);
      assert.equal(over, 0, `${name}: ${over}px of horizontal scroll at 375px`);
    };

    await page.goto(gppd.url + '/');
    await page.getByRole('heading', { name: 'Sign in to gppd' }).waitFor();
    await check('signin');
    await signIn(page, gppd);
    await page.locator('table.jobs-table tbody tr').first().waitFor();
    await check('jobs');
    await page.goto(`${gppd.url}/#/jobs/${long.id}`);
    await page.locator('ol.timeline > li.stage').first().waitFor();
    await check('job');
    await page.goto(`${gppd.url}/#/submit`);
    await page.getByRole('heading', { name: 'Submit a job', level: 1 }).waitFor();
    for (const d of await page.locator('details.spec-section > summary').all()) await d.click();
    await check('submit');
    await page.goto(`${gppd.url}/#/workers`);
    await page.getByRole('heading', { name: 'Workers', level: 1 }).waitFor();
    await check('workers');
    await page.goto(`${gppd.url}/#/models`);
    await page.getByRole('heading', { name: 'Models', level: 1 }).waitFor();
    await check('models');
    await page.goto(`${gppd.url}/#/compare`);
    await page.getByRole('heading', { name: 'Compare jobs', level: 1 }).waitFor();
    await check('compare');
  }, { viewport: PHONE });
});
