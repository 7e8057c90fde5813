// The jobs list: cursor paging ("Load more"), filters kept in the URL, live
// refresh without a reload, and selecting jobs to compare.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, withGppd, signIn, shot, apiCall, submitJob, ensureDataset } from './harness.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { if (browser) await browser.close(); });

const rowIds = (page) => page.locator('table.jobs-table tbody tr').evaluateAll((trs) => trs.map((tr) => tr.dataset.id));

test('the jobs list pages with the cursor and filters by state, owner, data set and model', async () => {
  await withGppd(browser, 'jobs-paging', async (page, gppd) => {
    await ensureDataset(gppd);
    const ana = await apiCall(gppd, 'POST', '/api/v1/tokens', { name: 'ana', role: 'user' });
    assert.equal(ana.status, 201, ana.text);
    const created = [];
    for (let i = 0; i < 20; i++) created.push(await submitJob(gppd, { dataset: 'fashion-mnist', model: 'lenet5', name: `lenet5-${i}`, iterations: 1 }));
    for (let i = 0; i < 3; i++) created.push(await submitJob(gppd, { dataset: 'fashion-mnist', model: 'lenet300-100', name: `mlp-${i}`, iterations: 1 }));
    for (let i = 0; i < 2; i++) created.push(await submitJob(gppd, { dataset: 'fashion-mnist', model: 'lenet5', name: `ana-${i}` }, ana.json.token));
    for (const j of [created[3], created[7]]) {
      assert.equal((await apiCall(gppd, 'POST', `/api/v1/jobs/${j.id}/cancel`)).status, 202);
    }
    const newestFirst = created.map((j) => j.id).reverse();

    await signIn(page, gppd);
    await page.locator('table.jobs-table tbody tr').first().waitFor();
    // First page: 20 newest, then "Load more" fetches the rest with the cursor.
    assert.deepEqual(await rowIds(page), newestFirst.slice(0, 20));
    const more = page.getByRole('button', { name: 'Load more' });
    assert.equal(await more.isVisible(), true);
    assert.match(await page.locator('.count').textContent(), /20 jobs shown, more available/);
    await shot(page, 'jobs-page-1');
    await more.click();
    await page.locator('.count', { hasText: '25 jobs shown' }).waitFor();
    assert.deepEqual(await rowIds(page), newestFirst);
    assert.equal(await more.isVisible(), false);
    // Focus moved to the first newly loaded row for keyboard users.
    assert.equal(await page.evaluate(() => document.activeElement.closest('tr')?.dataset.id), newestFirst[20]);

    const applyFilter = async (fill) => {
      await fill();
      await page.getByRole('button', { name: 'Apply' }).click();
    };
    // State.
    await applyFilter(() => page.getByLabel('State').selectOption('cancelled'));
    await page.waitForFunction(() => location.hash.includes('state=cancelled'));
    await page.locator('table.jobs-table tbody tr').first().waitFor();
    assert.deepEqual((await rowIds(page)).sort(), [created[3].id, created[7].id].sort());
    assert.deepEqual(await page.locator('table.jobs-table tbody .badge').allTextContents(), ['cancelled', 'cancelled']);
    await shot(page, 'jobs-filter-state');
    // Model (state cleared).
    await page.getByRole('link', { name: 'Clear' }).click();
    await page.locator('.count', { hasText: '20 jobs shown' }).waitFor();
    await applyFilter(() => page.getByLabel('Model').fill('lenet300-100'));
    await page.waitForFunction(() => location.hash.includes('model=lenet300-100'));
    await page.locator('.count', { hasText: '3 jobs shown' }).waitFor();
    assert.deepEqual(await rowIds(page), created.slice(20, 23).map((j) => j.id).reverse());
    // Owner.
    await page.getByLabel('Model').fill('');
    await applyFilter(() => page.getByLabel('Owner').fill('ana'));
    await page.locator('.count', { hasText: '2 jobs shown' }).waitFor();
    assert.deepEqual(await rowIds(page), created.slice(23).map((j) => j.id).reverse());
    // Data set, combined with a state that nothing has.
    await page.getByLabel('Owner').fill('');
    await page.getByLabel('Data set').fill('fashion-mnist');
    await applyFilter(() => page.getByLabel('State').selectOption('succeeded'));
    await page.getByText('No jobs match these filters.').waitFor();
    // The filter survives a reload (it is in the URL).
    await page.reload();
    await page.getByText('No jobs match these filters.').waitFor();
    assert.equal(await page.getByLabel('State').inputValue(), 'succeeded');
    assert.equal(await page.getByLabel('Data set').inputValue(), 'fashion-mnist');
  });
});

test('the list refreshes by itself and selected jobs open in compare', async () => {
  await withGppd(browser, 'jobs-live', async (page, gppd) => {
    await ensureDataset(gppd);
    const a = await submitJob(gppd, { dataset: 'fashion-mnist', model: 'lenet5', name: 'first' });
    await signIn(page, gppd);
    await page.locator(`tr[data-id="${a.id}"]`).waitFor();

    // A job submitted elsewhere appears, and a cancel elsewhere shows, without a reload.
    const b = await submitJob(gppd, { dataset: 'fashion-mnist', model: 'lenet5', name: 'second' });
    await page.locator(`tr[data-id="${b.id}"]`).waitFor({ timeout: 15000 });
    assert.deepEqual(await rowIds(page), [b.id, a.id]);
    await apiCall(gppd, 'POST', `/api/v1/jobs/${a.id}/cancel`);
    await page.locator(`tr[data-id="${a.id}"] .badge`, { hasText: 'cancelled' }).waitFor({ timeout: 15000 });

    // Select both and compare.
    const compare = page.getByRole('button', { name: /Compare selected/ });
    assert.equal(await compare.isDisabled(), true);
    await page.getByRole('checkbox', { name: 'Select first to compare' }).check();
    await page.getByRole('checkbox', { name: 'Select second to compare' }).check();
    assert.equal(await compare.textContent(), 'Compare selected (2)');
    await compare.click();
    await page.getByRole('heading', { name: 'Compare jobs', level: 1 }).waitFor();
    assert.equal(await page.getByRole('checkbox', { name: /first/ }).isChecked(), true);
    assert.equal(await page.getByRole('checkbox', { name: /second/ }).isChecked(), true);
    // Nothing has run, so there is nothing to overlay yet, and it says so.
    await page.getByText('None of these jobs has recorded a metric yet').waitFor();
    assert.equal(await page.locator('.compare-table tbody tr').count(), 2);
    assert.match(page.url(), new RegExp(`ids=(${a.id},${b.id}|${b.id},${a.id})`));
    await shot(page, 'compare-no-metrics');
  });
});
