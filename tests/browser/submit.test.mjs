// Submitting through the form, a field error from the API next to its
// field, and cancel / retry from a job's page.  Without workers (they come
// with the scheduler) a job stays queued, which is what these tests use.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, withGppd, signIn, shot, apiCall, submitJob, ensureDataset } from './harness.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { if (browser) await browser.close(); });

test('a job submitted through the form is queued, listed, and shows its planned stages', async () => {
  await withGppd(browser, 'submit', async (page, gppd) => {
    await ensureDataset(gppd);
    await signIn(page, gppd);
    await page.getByRole('link', { name: 'Submit', exact: true }).click();
    await page.getByRole('heading', { name: 'Submit a job', level: 1 }).waitFor();

    // Defaults are shown.
    const val = (name) => page.locator(`[name="${name}"]`).inputValue();
    assert.equal(await val('dataset'), 'fashion-mnist');
    assert.equal(await val('model'), 'lenet5');
    assert.equal(await val('device'), 'any');
    assert.equal(await val('train.epochs'), '2');
    assert.equal(await val('train.lr'), '0.01');
    assert.equal(await val('prune.ratio'), '0.3');
    assert.equal(await val('iterations'), '10');
    assert.equal(await val('stop.max_accuracy_drop'), '0.005');
    assert.equal(await page.locator('[name="prune.reconstruct"]').isChecked(), false);
    assert.equal(await val('prune.final_finetune_epochs'), '9');
    await shot(page, 'submit-form');

    await page.getByLabel('name', { exact: true }).fill('form-job');
    await page.getByLabel('iterations', { exact: true }).fill('2');
    await page.getByLabel('priority', { exact: true }).fill('5');
    // The request body preview shows what will be sent: only changed fields.
    const body = JSON.parse(await page.locator('#submit-preview').textContent());
    assert.deepEqual(body, { dataset: 'fashion-mnist', model: 'lenet5', name: 'form-job', priority: 5, iterations: 2 });

    await page.getByRole('button', { name: 'Submit job' }).click();
    await page.getByRole('heading', { name: 'form-job', level: 1 }).waitFor();
    assert.match(page.url(), /#\/jobs\/j[a-z2-7]+$/);
    const jobId = decodeURIComponent(page.url().split('#/jobs/')[1]);

    // State queued; the stage timeline lists the planned chain with the
    // reason the first stage waits.
    assert.equal(await page.locator('.state-slot .badge').textContent(), 'queued');
    // The header counts it at once (a navigation reads the daemon's health; the poll is every 5 s).
    await page.locator('#health', { hasText: '0 workers · 1 queued' }).waitFor({ timeout: 3000 });
    const stages = page.locator('ol.timeline > li.stage');
    assert.equal(await stages.count(), 6);
    assert.deepEqual(await stages.locator('.stage-name').allTextContents(),
      ['1. Train', '2. Push 1', '3. Prune 1', '4. Push 2', '5. Prune 2', '6. Final recovery']);
    assert.deepEqual(await stages.evaluateAll((els) => els.map((e) => e.dataset.state)),
      ['queued', 'queued', 'queued', 'queued', 'queued', 'queued']);
    assert.equal(await stages.first().locator('.stage-reason').textContent(), 'waiting for a worker');
    assert.match(await stages.nth(1).locator('.stage-reason').textContent(), /previous stage/);
    // The stored spec shows the defaults filled in.
    await page.getByText('The spec as stored, defaults filled').click();
    const spec = JSON.parse(await page.locator('pre.spec').textContent());
    assert.equal(spec.name, 'form-job');
    assert.equal(spec.priority, 5);
    assert.equal(spec.prune.ratio, 0.3);
    assert.equal(spec.train.epochs, 2);
    // Nothing ran: no metrics, no checkpoint to download.
    await page.getByText('No metric points yet').waitFor();
    assert.equal(await page.getByRole('button', { name: 'Download .gppm' }).isDisabled(), true);
    assert.equal(await page.getByRole('button', { name: 'Cancel job' }).isEnabled(), true);
    assert.equal(await page.getByRole('button', { name: 'Retry' }).isDisabled(), true);
    await shot(page, 'job-queued');

    // The job is in the list.
    await page.getByRole('link', { name: 'Jobs', exact: true }).first().click();
    const row = page.locator(`tr[data-id="${jobId}"]`);
    await row.waitFor();
    assert.equal(await row.locator('.badge').textContent(), 'queued');
    assert.equal(await row.locator('a.job-link').textContent(), 'form-job');
    assert.match(await row.textContent(), /0\/6 stages/);   // train, 2 x (push, prune), final recovery
    // The stage column names the first stage (by name and reason where the
    // list gives them, else by position).
    assert.match(await row.locator('td[data-label="Stage"]').textContent(), /Train|stage 1 of 6/);
    await shot(page, 'jobs-list');

    // Exactly one job was created.
    const list = await apiCall(gppd, 'GET', '/api/v1/jobs');
    assert.equal(list.json.jobs.length, 1);
  });
});

test('a bad value shows the API error next to its field, and focus moves there', async () => {
  await withGppd(browser, 'field-error', async (page, gppd) => {
    await ensureDataset(gppd);
    await signIn(page, gppd, gppd.token, '#/submit');
    await page.getByRole('heading', { name: 'Submit a job', level: 1 }).waitFor();
    const ratio = page.locator('[name="prune.ratio"]');
    assert.equal(await ratio.isVisible(), false); // inside the closed Prune section
    await page.locator('details[data-section="prune"] > summary').click();
    await ratio.fill('1.5');
    await page.getByRole('button', { name: 'Submit job' }).click();

    const err = page.locator('#f-prune-ratio-error');
    await err.waitFor();
    const text = await err.textContent();
    assert.match(text, /prune\.ratio/);
    assert.equal(await ratio.getAttribute('aria-invalid'), 'true');
    assert.match(await ratio.getAttribute('aria-describedby'), /\bf-prune-ratio-error\b/);
    assert.equal(await page.evaluate(() => document.activeElement.name), 'prune.ratio');
    // The summary at the top repeats it as an alert.
    assert.match(await page.locator('#submit-error').textContent(), /prune\.ratio/);
    assert.equal(await page.locator('#submit-error').getAttribute('role'), 'alert');
    await shot(page, 'submit-field-error');
    assert.equal((await apiCall(gppd, 'GET', '/api/v1/jobs')).json.jobs.length, 0);

    // Editing the field clears its error; a good value goes through.
    await ratio.fill('0.5');
    assert.equal(await ratio.getAttribute('aria-invalid'), null);
    assert.equal(await err.isVisible(), false);
    await page.getByRole('button', { name: 'Submit job' }).click();
    await page.locator('ol.timeline').waitFor();
    const jobs = (await apiCall(gppd, 'GET', '/api/v1/jobs')).json.jobs;
    assert.equal(jobs.length, 1);
    const full = await apiCall(gppd, 'GET', `/api/v1/jobs/${jobs[0].id}`);
    assert.equal(full.json.spec.prune.ratio, 0.5);
  });
});

test('an unregistered data set is refused next to the dataset field', async () => {
  await withGppd(browser, 'dataset-error', async (page, gppd) => {
    await signIn(page, gppd, gppd.token, '#/submit');
    await page.getByLabel('dataset', { exact: true }).fill('no-such-data');
    await page.getByRole('button', { name: 'Submit job' }).click();
    const err = page.locator('#f-dataset-error');
    await err.waitFor();
    assert.match(await err.textContent(), /not registered/);
    assert.equal(await page.evaluate(() => document.activeElement.name), 'dataset');
  });
});

test('cancel a queued job from its page, see the API error for a second cancel, retry it', async () => {
  await withGppd(browser, 'cancel', async (page, gppd) => {
    await ensureDataset(gppd);
    const job = await submitJob(gppd, { dataset: 'fashion-mnist', model: 'lenet5', name: 'to-cancel', iterations: 1 });
    await signIn(page, gppd, gppd.token, `#/jobs/${job.id}`);
    await page.getByRole('heading', { name: 'to-cancel', level: 1 }).waitFor();
    const badge = page.locator('.state-slot .badge');
    assert.equal(await badge.textContent(), 'queued');

    await page.getByRole('button', { name: 'Cancel job' }).click();
    await page.locator('.state-slot .badge', { hasText: 'cancelled' }).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Cancel job' }).isDisabled(), true);
    assert.equal(await page.getByRole('button', { name: 'Retry' }).isEnabled(), true);
    assert.deepEqual(await page.locator('ol.timeline > li.stage').evaluateAll((els) => els.map((e) => e.dataset.state)),
      ['cancelled', 'cancelled', 'cancelled', 'cancelled']);
    assert.match(await page.locator('.meta').textContent(), /cancelled by/);
    assert.equal((await apiCall(gppd, 'GET', `/api/v1/jobs/${job.id}`)).json.state, 'cancelled');
    await shot(page, 'job-cancelled');

    // Retry queues it again.
    await page.getByRole('button', { name: 'Retry' }).click();
    await page.locator('.state-slot .badge', { hasText: 'queued' }).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Cancel job' }).isEnabled(), true);

    // A cancel the server refuses shows the API's error.  The job is
    // cancelled behind the page's back while the page's reads of the job are
    // held, so the page still offers Cancel.
    const held = [];
    let holding = true;
    const jobUrl = `**/api/v1/jobs/${job.id}`;
    await page.route(jobUrl, (route) => {
      if (holding && route.request().method() === 'GET') held.push(route);
      else route.continue();
    });
    const cancelled = await apiCall(gppd, 'POST', `/api/v1/jobs/${job.id}/cancel`);
    assert.equal(cancelled.status, 202);
    await page.getByRole('button', { name: 'Cancel job' }).click();
    const err = page.locator('#job-action-error');
    await err.waitFor();
    assert.match(await err.textContent(), /HTTP 409/);
    assert.equal(await err.getAttribute('role'), 'alert');
    await shot(page, 'job-cancel-refused');
    // Release the held reads before unroute (which lets requests still
    // intercepted go on by itself: continuing them afterwards throws).
    holding = false;
    for (const r of held) await r.continue();
    await page.unroute(jobUrl);
    await page.locator('.state-slot .badge', { hasText: 'cancelled' }).waitFor();
  });
});

test("the form's fields and defaults are gppd's: every leaf of a stored spec has a form field with the same default", async () => {
  await withGppd(browser, 'defaults', async (page, gppd) => {
    await ensureDataset(gppd);
    const { FIELDS } = await import('../../web/js/jobspec.js');
    const r = await apiCall(gppd, 'POST', '/api/v1/jobs', { dataset: 'fashion-mnist', model: 'lenet5' });
    assert.equal(r.status, 201, r.text);
    const leaves = new Map();
    const walk = (o, prefix) => {
      for (const [k, v] of Object.entries(o)) {
        const p = prefix ? `${prefix}.${k}` : k;
        if (v && typeof v === 'object' && !Array.isArray(v) && p !== 'labels') walk(v, p);
        else leaves.set(p, v);
      }
    };
    walk(r.json.spec, '');
    const byPath = new Map(FIELDS.map((f) => [f.path, f]));
    for (const [p, v] of leaves) {
      const f = byPath.get(p);
      assert.ok(f, `the form has no field for ${p} (web/js/jobspec.js)`);
      if (p === 'name') continue;   // the default name is made from model and data set
      assert.deepEqual(f.def, v, `the form's default of ${p}`);
    }
    for (const f of FIELDS) assert.ok(leaves.has(f.path), `the form's ${f.path} is not a field of gppd's spec`);
  });
});
