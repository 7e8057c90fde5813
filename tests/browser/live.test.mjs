// A job that really runs: gppd with two local workers (real gpp-worker
// processes), a tiny job submitted through the form, and its page followed
// live over Server-Sent Events: the metric charts gain points, a reload in
// the middle resumes the live view, and the finished job shows its
// accuracy-versus-size point and the per-layer widths before and after.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { launchBrowser, withGppd, signIn, shot, apiCall, submitJob } from './harness.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { if (browser) await browser.close(); });

/** Metric points drawn on the job page: the sum of every chart's "N points" (its screen-reader summary). */
function chartPoints(page) {
  return page.evaluate(() => {
    let n = 0;
    for (const el of document.querySelectorAll('.charts figure.chart .chart-summary')) {
      for (const m of el.textContent.matchAll(/: (\d+) points/g)) n += Number(m[1]);
    }
    return n;
  });
}

/** Wait until the charts hold more than `than` points; returns the new count. */
async function morePoints(page, than, timeout) {
  const handle = await page.waitForFunction((n) => {
    let c = 0;
    for (const el of document.querySelectorAll('.charts figure.chart .chart-summary')) {
      for (const m of el.textContent.matchAll(/: (\d+) points/g)) c += Number(m[1]);
    }
    return c > n ? c : false;
  }, than, { timeout, polling: 50 });
  return handle.jsonValue();
}

/** What the page shows of the job's advance: state badge, stage states, progress card. */
function shownProgress(page) {
  return page.evaluate(() => [
    document.querySelector('.state-slot .badge')?.textContent,
    [...document.querySelectorAll('ol.timeline > li.stage')].map((e) => e.dataset.state).join(','),
    document.querySelector('.cards .card .card-value')?.textContent,
    [...document.querySelectorAll('ol.timeline progress, ol.timeline [role="progressbar"]')]
      .map((e) => e.getAttribute('value') ?? e.getAttribute('aria-valuenow')).join(','),
  ].join('|'));
}

test('a tiny job runs on local workers and its page follows it live, across a reload', async (t) => {
  await withGppd(browser, 'live', async (page, gppd) => {
    const t0 = Date.now();
    await signIn(page, gppd, gppd.token, '#/submit');
    await page.getByRole('heading', { name: 'Submit a job', level: 1 }).waitFor();

    // The form, with the tiny settings (sections opened where closed).
    const set = async (name, value) => {
      const el = page.locator(`[name="${name}"]`);
      if (!(await el.isVisible())) {
        await page.locator(`details[data-section="${name.split('.')[0]}"] > summary`).click();
      }
      await el.fill(value);
    };
    await set('name', 'live-job');
    assert.equal(await page.locator('[name="dataset"]').inputValue(), 'fashion-mnist');
    assert.equal(await page.locator('[name="model"]').inputValue(), 'lenet5');
    await set('iterations', '1');
    await set('train.epochs', '1');
    await set('data.train_limit', '3000');
    await set('data.test_limit', '300');
    const body = JSON.parse(await page.locator('#submit-preview').textContent());
    assert.deepEqual(body, {
      dataset: 'fashion-mnist', model: 'lenet5', name: 'live-job', iterations: 1,
      train: { epochs: 1 }, data: { train_limit: 3000, test_limit: 300 },
    });
    await page.getByRole('button', { name: 'Submit job' }).click();
    await page.getByRole('heading', { name: 'live-job', level: 1 }).waitFor();
    const jobId = decodeURIComponent(page.url().split('#/jobs/')[1]);
    assert.match(jobId, /^j[a-z2-7]+$/);
    const stages = page.locator('ol.timeline > li.stage');
    assert.deepEqual(await stages.locator('.stage-name').allTextContents(),
      ['1. Train', '2. Push 1', '3. Prune 1', '4. Final recovery']);

    // The live view is on, and the charts gain points while the job runs.
    await page.locator('.live[data-live="open"]').waitFor({ timeout: 15000 });
    const p1 = await morePoints(page, 0, 60000);
    const p2 = await morePoints(page, p1, 60000);
    assert.ok(p2 > p1);
    const running = await apiCall(gppd, 'GET', `/api/v1/jobs/${jobId}`);
    assert.ok(!['succeeded', 'failed', 'cancelled'].includes(running.json.state),
      `the job finished before the reload (${running.json.state}): it is too quick to watch`);
    t.diagnostic(`points ${p1} then ${p2}; reload at ${Date.now() - t0} ms, stages ${
      running.json.stages.map((s) => s.state).join(',')}`);

    // A reload mid-job: the page comes back live, and what it shows keeps moving.
    await page.reload();
    await page.getByRole('heading', { name: 'live-job', level: 1 }).waitFor();
    await page.locator('.live[data-live="open"]').waitFor({ timeout: 15000 });
    const before = await shownProgress(page);
    const p3 = await chartPoints(page);
    await page.waitForFunction((b) => {
      const now = [
        document.querySelector('.state-slot .badge')?.textContent,
        [...document.querySelectorAll('ol.timeline > li.stage')].map((e) => e.dataset.state).join(','),
        document.querySelector('.cards .card .card-value')?.textContent,
        [...document.querySelectorAll('ol.timeline progress, ol.timeline [role="progressbar"]')]
          .map((e) => e.getAttribute('value') ?? e.getAttribute('aria-valuenow')).join(','),
      ].join('|');
      return now !== b;
    }, before, { timeout: 60000, polling: 50 });
    const p4 = await morePoints(page, p3, 60000);
    t.diagnostic(`after the reload: points ${p3} then ${p4} at ${Date.now() - t0} ms`);

    // To the end.
    await page.locator('.state-slot .badge', { hasText: 'succeeded' }).waitFor({ timeout: 120000 });
    // the only prune is the size-first model and had the final recovery: that stage is skipped
    assert.deepEqual(await stages.evaluateAll((els) => els.map((e) => e.dataset.state)),
      ['succeeded', 'succeeded', 'succeeded', 'skipped']);
    assert.equal((await apiCall(gppd, 'GET', `/api/v1/jobs/${jobId}`)).json.state, 'succeeded');
    // gppd ends the stream of a finished job: the page stops there instead of reconnecting.
    await page.locator('.live[data-live="ended"]', { hasText: 'finished' }).waitFor({ timeout: 10000 });
    assert.equal(await page.getByRole('button', { name: 'Download .gppm' }).isEnabled(), true);
    assert.equal(await page.getByRole('button', { name: 'Cancel job' }).isDisabled(), true);

    // Accuracy versus size: a chart with the prune step's point, also as a table.
    const avs = page.locator('.avs');
    await avs.locator('figure.chart').waitFor();
    assert.match(await avs.locator('.chart-summary').textContent(), /prune steps: 1 points/);
    const rows = await avs.locator('.avs-table tbody th').allTextContents();
    assert.ok(rows.includes('prune 1'), `points: ${rows.join(', ')}`);

    // What the channel choice is worth: the prune stage's cut_compare record
    // (GPP, L1 norm, random right after the cut) as a table.
    const pruneStage = (await apiCall(gppd, 'GET', `/api/v1/jobs/${jobId}`)).json.stages
      .find((s) => s.kind === 'prune');
    const cc = pruneStage.summary.cut_compare;
    assert.ok(cc && Number.isFinite(cc.gpp_test) && Number.isFinite(cc.l1_test), JSON.stringify(pruneStage.summary));
    const cutCells = await page.locator('.cuts table.cut-table tbody tr').first().locator('td').allTextContents();
    assert.equal(cutCells.length, 4);
    assert.equal(cutCells[1], `${(cc.gpp_test * 100).toFixed(2)} %`);
    assert.ok(cutCells[2].startsWith(`${(cc.l1_test * 100).toFixed(2)} %`), cutCells[2]);
    assert.ok(cutCells[3].startsWith(`${(cc.random_test * 100).toFixed(2)} %`), cutCells[3]);

    // Every stage counts its iterations from 0: the charts lay the stages end
    // to end, so the loss chart holds each (stage, iteration) point once and
    // its latest point is in the last stage that trained (the prune's fine-tune).
    const lossApi = (await apiCall(gppd, 'GET', `/api/v1/jobs/${jobId}/metrics?name=loss&max_points=0`)).json.series.loss;
    const lossKeys = new Set(lossApi.iteration.map((it, i) => `${lossApi.stage[i]}:${it}`));
    assert.ok(new Set(lossApi.stage).size >= 3, `loss in stages ${[...new Set(lossApi.stage)]}`);
    assert.ok(lossKeys.size < 1000, `${lossKeys.size} points: the page would see them downsampled`);
    const lossLine = (txt) => txt.match(/(?:^|[.;] )loss: (\d+) points, latest \S+ at ([^,]+),/);
    const lossFig = page.locator('figure.chart[aria-label="Loss terms"] .chart-summary');
    await page.waitForFunction((n) => {
      const el = document.querySelector('figure.chart[aria-label="Loss terms"] .chart-summary');
      const m = el && el.textContent.match(/(?:^|[.;] )loss: (\d+) points/);
      return m && Number(m[1]) === n;
    }, lossKeys.size, { timeout: 20000, polling: 100 });
    const lossAt = lossLine(await lossFig.textContent());
    assert.ok(lossAt, await lossFig.textContent());
    assert.match(lossAt[2], /^Prune 1 · \d+$/);

    // Downloads: the checkpoint button gives the bytes the API serves, the
    // metrics button every point of every series (not the charts' downsampled ones).
    const fromApi = async (p) => Buffer.from(await (await fetch(gppd.url + p, { headers: { Authorization: `Bearer ${gppd.token}` } })).arrayBuffer());
    const [gppmDl] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download .gppm' }).click()]);
    const gppmBytes = await readFile(await gppmDl.path());
    assert.ok(gppmBytes.length > 1000, `${gppmBytes.length} bytes`);
    assert.ok(gppmBytes.equals(await fromApi(`/api/v1/jobs/${jobId}/model?format=gppm`)), 'the .gppm differs from the API\'s');
    const [csvDl] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download metrics (CSV)' }).click()]);
    assert.match(csvDl.suggestedFilename(), /\.csv$/);
    const csv = (await readFile(await csvDl.path(), 'utf8')).trim().split('\n');
    assert.equal(csv[0], 'name,stage,attempt,iteration,value,time');
    const all = (await apiCall(gppd, 'GET', `/api/v1/jobs/${jobId}/metrics?max_points=0`)).json.series;
    const nPoints = Object.values(all).reduce((n, s) => n + s.iteration.length, 0);
    assert.equal(csv.length - 1, nPoints);
    assert.equal(csv.filter((l) => l.startsWith('loss,')).length, lossApi.iteration.length);

    // A trained model handed in through the form: the downloaded .gppm goes
    // back up (POST /api/v1/models: the same bytes, so "already uploaded"),
    // the model field names it, and the job starts by evaluating it.
    await page.goto(`${gppd.url}/#/submit`);
    await page.getByRole('heading', { name: 'Submit a job', level: 1 }).waitFor();
    const up = page.locator('#submit-upload');
    await up.setInputFiles({ name: 'junk.gppm', mimeType: 'application/octet-stream', buffer: Buffer.from('not a checkpoint at all') });
    await page.locator('#submit-upload-status', { hasText: 'Not uploaded: not a checkpoint gppd can run' }).waitFor();
    assert.equal(await page.locator('[name="model"]').inputValue(), 'lenet5');
    await up.setInputFiles(await gppmDl.path());
    const sha = createHash('sha256').update(gppmBytes).digest('hex');
    await page.locator('#submit-upload-status', { hasText: '(already uploaded)' }).waitFor();
    assert.match(await page.locator('#submit-upload-status').textContent(), /params, input \[1, 28, 28\], 10 classes/);
    assert.equal(await page.locator('[name="model"]').inputValue(), JSON.stringify({ checkpoint: sha }));
    // ... and listed with the user's uploads (GET /api/v1/models), selected;
    // picking it from the list names it in the model field again
    const mine = page.locator('#submit-uploaded');
    await mine.waitFor();
    assert.equal(await mine.inputValue(), sha);
    assert.match(await mine.locator('option:checked').textContent(), new RegExp(`^${sha.slice(0, 12)}… · .* params · 1×28×28 · 10 classes · `));
    await page.locator('[name="model"]').fill('lenet5');
    await mine.selectOption('');
    await mine.selectOption(sha);
    assert.equal(await page.locator('[name="model"]').inputValue(), JSON.stringify({ checkpoint: sha }));
    await page.locator('[data-field="upload"]').scrollIntoViewIfNeeded();
    await shot(page, 'submit-upload');
    await page.getByRole('button', { name: 'Submit job' }).click();
    await page.locator('ol.timeline > li.stage').first().waitFor();
    const fromModel = await page.locator('ol.timeline > li.stage .stage-name').allTextContents();
    assert.equal(fromModel[0], '1. Evaluate the model');
    assert.equal(fromModel[1], '2. Push 1');
    await page.getByRole('button', { name: 'Cancel job' }).click();

    // The Models page: the upload with its job count; "Compress" opens the
    // form with it; a delete is refused while a queued job uses it (the
    // reason shown), then goes, the file kept for the jobs that used it.
    await page.goto(`${gppd.url}/#/models`);
    await page.getByRole('heading', { name: 'Models', level: 1 }).waitFor();
    const row = page.locator(`tr[data-sha="${sha}"]`);
    await row.waitFor();
    assert.equal(await row.locator('td[data-label="Input"]').textContent(), '1×28×28');
    assert.match(await row.locator('td[data-label="Jobs"]').textContent(), /^[1-9]/);
    await shot(page, 'models');
    await row.getByRole('link', { name: /^Compress/ }).click();
    await page.getByRole('heading', { name: 'Submit a job', level: 1 }).waitFor();
    assert.equal(await page.locator('[name="model"]').inputValue(), JSON.stringify({ checkpoint: sha }));
    assert.equal(await page.locator('#submit-uploaded').inputValue(), sha);
    const waiting = await apiCall(gppd, 'POST', '/api/v1/jobs', { dataset: 'fashion-mnist', model: { checkpoint: sha }, device: 'gpu' });
    assert.equal(waiting.status, 201, waiting.text);
    await page.goto(`${gppd.url}/#/models`);
    const del = page.locator(`tr[data-sha="${sha}"]`).getByRole('button', { name: /^Delete/ });
    await del.click();
    assert.equal(await del.textContent(), 'Confirm delete');
    await del.click();
    await page.locator('#models-error', { hasText: 'in use by 1 queued or running job' }).waitFor();
    assert.equal(await page.locator(`tr[data-sha="${sha}"]`).count(), 1);
    assert.equal((await apiCall(gppd, 'POST', `/api/v1/jobs/${waiting.json.id}/cancel`)).status, 202);
    await del.click();
    await del.click();
    await page.locator('#status', { hasText: 'its file stays for the jobs that used it' }).waitFor();
    await page.locator('tr[data-sha]').first().waitFor({ state: 'detached' });
    assert.equal((await apiCall(gppd, 'GET', `/api/v1/models/${sha}`)).status, 404);
    assert.equal((await apiCall(gppd, 'GET', `/api/v1/jobs/${jobId}/model`)).status, 200);

    await page.goto(`${gppd.url}/#/jobs/${encodeURIComponent(jobId)}`);
    await page.getByRole('heading', { name: 'live-job', level: 1 }).waitFor();

    // Per-layer widths: before and after bars for every layer, and the
    // pruned layers narrower after.
    // (The architecture is fetched again a moment after each stage ends.)
    await page.waitForFunction(() => /Prune 1/.test(document.querySelector('#widths-stage option:checked')?.textContent || ''),
      null, { timeout: 15000 });
    const widths = page.locator('.widths table.width-table');
    await widths.waitFor();
    assert.match(await widths.locator('caption').textContent(), /baseline and Prune 1/);
    const layerRows = widths.locator('tbody tr');
    const nLayers = await layerRows.count();
    assert.ok(nLayers >= 2, `layers: ${nLayers}`);
    assert.equal(await widths.locator('.bar-before .bar-fill').count(), nLayers);
    assert.equal(await widths.locator('.bar-after .bar-fill').count(), nLayers);
    const pairs = (await layerRows.locator('td.num:nth-of-type(2)').allTextContents())
      .map((t) => t.split('→').map((x) => Number(x.trim())));
    assert.ok(pairs.every(([b, a]) => Number.isFinite(b) && Number.isFinite(a) && a <= b), JSON.stringify(pairs));
    assert.ok(pairs.some(([b, a]) => a < b), `nothing was pruned: ${JSON.stringify(pairs)}`);
    const barWidth = await widths.locator('.bar-after .bar-fill').first().evaluate((e) => e.getBoundingClientRect().width);
    assert.ok(barWidth > 0);

    await shot(page, 'job-succeeded');
    t.diagnostic(`done in ${Date.now() - t0} ms`);
    assert.ok(Date.now() - t0 < 150000, `took ${Date.now() - t0} ms`);
  }, { workers: 2 });
});

test('a prune the stop rule would judge below its bound shows the recovery it got first', async () => {
  await withGppd(browser, 'live-recover', async (page, gppd) => {
    // A harsh cut and a fine-tune rate too small to win anything back: the
    // first prune is below the baseline's validation accuracy less 5 points
    // after its fine-tune, recovers 1 more epoch (stop.recover_epochs), is
    // still below, and the stop rule ends the loop there.
    const job = await submitJob(gppd, {
      dataset: 'fashion-mnist', model: 'lenet5', name: 'recover', iterations: 2,
      train: { epochs: 1 }, data: { train_limit: 1000, test_limit: 300 },
      prune: { ratio: 0.7, lr: 1e-6, final_finetune_epochs: 1 },
      stop: { max_accuracy_drop: 0.05, recover_epochs: 1 },
    });
    await signIn(page, gppd, gppd.token, `#/jobs/${job.id}`);
    await page.locator('.state-slot .badge', { hasText: 'succeeded' }).waitFor({ timeout: 120000 });
    const api = (await apiCall(gppd, 'GET', `/api/v1/jobs/${job.id}`)).json;
    const s = api.stages[2].summary;
    assert.equal(s.recover_epochs, 1, JSON.stringify(s));
    const prune = page.locator('ol.timeline > li.stage[data-idx="2"]');
    assert.equal(await prune.getAttribute('data-kind'), 'prune');
    const note = await prune.locator('.stage-reason').textContent();
    const pct = (x) => `${(100 * x).toFixed(2)} %`;
    assert.equal(note, `below the allowed drop after its fine-tune (validation ${pct(s.val_before_recover)}): 1 more epoch took it to ${pct(s.val_accuracy)}`);
    // the stages the rule skipped say why
    assert.match(await page.locator('ol.timeline > li.stage[data-idx="3"] .stage-reason').textContent(), /stopped early/);
    await shot(page, 'job-recovered-prune');
  }, { workers: 1 });
});
