// Sign-in: a bad token is refused with a message; the admin token opens the
// jobs list; a token refused mid-session (revoked) returns to sign-in with
// a message; sign-out forgets the token.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { launchBrowser, withGppd, signIn, shot, apiCall } from './harness.mjs';

let browser;
before(async () => { browser = await launchBrowser(); });
after(async () => { if (browser) await browser.close(); });

test('a bad token shows an error; the admin token shows the jobs list', async () => {
  await withGppd(browser, 'signin', async (page, gppd) => {
    await page.goto(gppd.url + '/');
    await page.getByRole('heading', { name: 'Sign in to gppd' }).waitFor();
    // The token field has focus from the start.
    assert.equal(await page.evaluate(() => document.activeElement.id), 'token');
    await shot(page, 'signin');

    await page.getByLabel('Access token').fill('gpp_adm_not-a-real-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    const err = page.locator('#signin-error');
    await err.filter({ hasText: 'not accepted' }).waitFor();
    assert.equal(await page.getByLabel('Access token').getAttribute('aria-invalid'), 'true');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('gppd.token')), null);
    await shot(page, 'signin-bad-token');

    await page.getByLabel('Access token').fill(gppd.token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Jobs', level: 1 }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('gppd.token')), gppd.token);
    await page.getByText('No jobs yet.').waitFor();
    assert.equal(await page.getByRole('navigation', { name: 'Main' }).isVisible(), true);
    assert.equal(await page.locator('nav#nav a[aria-current="page"]').textContent(), 'Jobs');
    await shot(page, 'jobs-empty');
  });
});

test('a token refused mid-session returns to sign-in with a message', async () => {
  await withGppd(browser, 'signin-revoked', async (page, gppd) => {
    const issued = await apiCall(gppd, 'POST', '/api/v1/tokens', { name: 'ana', role: 'user' });
    assert.equal(issued.status, 201, issued.text);
    await signIn(page, gppd, issued.json.token, '#/workers');
    // Sign-in returns to the page that was asked for.
    await page.getByRole('heading', { name: 'Workers', level: 1 }).waitFor();

    const revoked = await apiCall(gppd, 'DELETE', `/api/v1/tokens/${issued.json.id}`);
    assert.equal(revoked.status, 200, revoked.text);
    await page.getByRole('link', { name: 'Jobs', exact: true }).click();
    await page.getByRole('heading', { name: 'Sign in to gppd' }).waitFor();
    const msg = await page.locator('#signin-message').textContent();
    assert.match(msg, /not accepted/);
    assert.match(msg, /Sign in again/);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('gppd.token')), null);
    assert.equal(await page.getByRole('navigation', { name: 'Main' }).isVisible(), false);

    // Signing in again returns to the page that was asked for.
    await page.getByLabel('Access token').fill(gppd.token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Jobs', level: 1 }).waitFor();
  });
});

test('sign out forgets the token', async () => {
  await withGppd(browser, 'signout', async (page, gppd) => {
    await signIn(page, gppd);
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in to gppd' }).waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('gppd.token')), null);
    // A reload stays signed out.
    await page.reload();
    await page.getByRole('heading', { name: 'Sign in to gppd' }).waitFor();
  });
});
