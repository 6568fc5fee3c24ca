// Checks a finished sweep in the MLflow UI with Debian's headless Chromium (playwright-core), and
// saves screenshots. Used by tests/test_ui.py and scripts/ui_screenshots.sh.
//
//   node tests/ui/mlflow_ui.mjs '<json spec>'
//
// spec: {url, experimentId, parentName, childNames: [...], metricRunId, metricRunName, metric,
//        metricValue (text the metric table must show), out (folder), reportRunId (optional: also
//        open the parent's report/report.html artifact), reportFile (optional: a report.html path to
//        screenshot whole), prefix (screenshot name prefix),
//        model (optional: {runName, name, id, dataset, metricDataset, registered: {name, alias, version}}:
//        the run's Models and Dataset cells, the logged model's page, the registered model's page),
//        runPage (optional: {runId, texts: [...], name}: the run's page shows each text, e.g. its metrics),
//        artifactImages (optional: [path, ...]: image artifacts of reportRunId, each drawn in the artifact viewer)}
// Credentials for a server with basic auth: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.
// Prints one JSON object {ok, checks: [{name, ok, detail}], screenshots: [...]}; exit 1 unless ok.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const spec = JSON.parse(process.argv[2]);
const timeout = spec.timeoutMs ?? 90000;
const prefix = spec.prefix ?? '';
const checks = [];
const screenshots = [];
mkdirSync(spec.out, { recursive: true });

const check = (name, ok, detail = '') => checks.push({ name, ok: Boolean(ok), detail: String(detail) });

async function shot(page, name, options = {}) {
  const path = join(spec.out, `${prefix}${name}.png`);
  await page.screenshot({ path, ...options });
  screenshots.push(path);
}

async function visible(locator, ms = timeout) {
  try {
    await locator.first().waitFor({ state: 'visible', timeout: ms });
    return true;
  } catch {
    return false;
  }
}

async function closeAssistant(page) {
  // MLflow 3's assistant side panel takes a third of the page; close it when it is there.
  const close = page.getByRole('button', { name: 'Close', exact: true });
  if (await close.count()) await close.first().click().catch(() => {});
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  // playwright-core gives every launch a fresh, temporary --user-data-dir.
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
let page;
try {
  const user = process.env.MLFLOW_TRACKING_USERNAME;
  const context = await browser.newContext({
    viewport: { width: spec.width ?? 1440, height: spec.height ?? 900 },
    httpCredentials: user ? { username: user, password: process.env.MLFLOW_TRACKING_PASSWORD ?? '' } : undefined,
  });
  page = await context.newPage();

  // 1. The experiment's runs page: the parent run, its children hidden until it is expanded.
  await page.goto(`${spec.url}/#/experiments/${spec.experimentId}/runs`);
  const parent = page.getByText(spec.parentName, { exact: true });
  check('experiment page lists the parent run', await visible(parent), spec.parentName);
  await closeAssistant(page);
  const firstChild = page.getByText(spec.childNames[0], { exact: true });
  check('children are nested under the parent (hidden while it is collapsed)', !(await visible(firstChild, 3000)));
  const row = page.locator('.ag-row', { has: parent });
  await row.locator('button[data-component-id*="runnamecellrenderer"]').first().click();
  for (const name of spec.childNames) {
    check(`child run ${name} shows once the parent is expanded`, await visible(page.getByText(name, { exact: true })), name);
  }
  if (spec.widenRunNames) {
    // Full run names in screenshots: drag the Run Name column's edge (AG Grid's resize handle).
    const box = await page.locator('.ag-header-cell[col-id*="Run Name"]').first().boundingBox();
    if (box) {
      const [x, y] = [box.x + box.width - 2, box.y + box.height / 2];
      await page.mouse.move(x, y);
      await page.mouse.down();
      await page.mouse.move(x + spec.widenRunNames, y, { steps: 15 });
      await page.mouse.up();
    }
  }
  await page.waitForTimeout(500);
  await shot(page, 'experiment_runs');

  if (spec.model) {
    // The run's row: its Models cell names its logged model, its Dataset cell its data sets.
    const m = spec.model;
    const nameRow = page.locator('.ag-row', { has: page.getByText(m.runName, { exact: true }) }).first();
    const rowIndex = await nameRow.getAttribute('row-index');
    const cells = page.locator(`.ag-row[row-index="${rowIndex}"]`);
    // Once registered, the cell names the registered model (with its version) instead of the logged one.
    const shown = m.registered ? m.registered.name : m.name;
    const modelLink = cells.locator('.ag-cell[col-id="attributes.`Models`"] a', { hasText: shown });
    check(`Models column of ${m.runName} links its model (${shown})`, await visible(modelLink),
      await cells.locator('.ag-cell[col-id="attributes.`Models`"]').allInnerTexts().catch((e) => e));
    const datasetCell = cells.locator('.ag-cell[col-id="attributes.`Dataset`"]', { hasText: m.dataset });
    check(`Dataset column of ${m.runName} shows ${m.dataset}`, await visible(datasetCell),
      await cells.locator('.ag-cell[col-id="attributes.`Dataset`"]').allInnerTexts().catch((e) => e));
    const others = spec.childNames.filter((name) => name !== m.runName);
    for (const name of others) {
      const row = page.locator('.ag-row', { has: page.getByText(name, { exact: true }) }).first();
      const index = await row.getAttribute('row-index');
      const text = (await page.locator(`.ag-row[row-index="${index}"] .ag-cell[col-id="attributes.\`Models\`"]`)
        .allInnerTexts()).join(' ').trim();
      check(`Models column of ${name} is empty (only the best run has a model)`, text === '-' || text === '', text);
    }

    // The logged model's page: its metrics with their data sets, and its registered version.
    await page.goto(`${spec.url}/#/experiments/${spec.experimentId}/models/${m.id}`);
    await closeAssistant(page);
    check('logged model page is titled with the model name', await visible(page.getByText(m.name, { exact: true })), m.name);
    check('logged model page lists val/acc', await visible(page.getByText('val/acc', { exact: true })));
    check(`logged model metrics name their data set ${m.metricDataset}`,
      await visible(page.getByText(m.metricDataset, { exact: false })), m.metricDataset);
    if (m.registered) {
      check('logged model page links its registered version',
        await visible(page.getByText(`${m.registered.name}`, { exact: false })), m.registered.name);
    }
    await page.waitForTimeout(500);
    await shot(page, 'logged_model');

    if (m.registered) {
      // The registered model's page: the version and its alias.
      await page.goto(`${spec.url}/#/models/${encodeURIComponent(m.registered.name)}`);
      await closeAssistant(page);
      check(`registered model ${m.registered.name} lists Version ${m.registered.version}`,
        await visible(page.getByText(`Version ${m.registered.version}`, { exact: true })));
      check(`registered model shows the alias @ ${m.registered.alias}`,
        await visible(page.getByText(m.registered.alias, { exact: false })), m.registered.alias);
      await page.waitForTimeout(500);
      await shot(page, 'registered_model');
    }
  }

  // 2. A child's metric chart page.
  const q = (value) => encodeURIComponent(JSON.stringify(value));
  const metricUrl = `${spec.url}/#/metric?runs=${q([spec.metricRunId])}&metric=${q(spec.metric)}`
    + `&experiments=${q([spec.experimentId])}&plot_metric_keys=${q([spec.metric])}&plot_layout=${q({})}`
    + `&x_axis=step&y_axis_scale=linear&line_smoothness=1&show_point=true&deselected_curves=${q([])}`
    + `&last_linear_y_axis_range=${q([])}`;
  await page.goto(metricUrl);
  check(`metric page is titled ${spec.metric}`, await visible(page.getByRole('heading', { name: spec.metric })));
  await closeAssistant(page);
  const drawn = (await visible(page.locator('.js-plotly-plot'))) && await page.waitForFunction(() =>
    [...document.querySelectorAll('.js-plotly-plot .trace path')]
      .some((path) => (path.getAttribute('d') ?? '').length > 2), null, { timeout }).then(() => true, () => false);
  check('metric chart draws the series', drawn);
  check('chart legend names the child run', await visible(page.getByText(spec.metricRunName, { exact: true })), spec.metricRunName);
  if (spec.metricValue) {
    check('metric table shows the logged value', await visible(page.getByText(spec.metricValue, { exact: false })), spec.metricValue);
  }
  await page.waitForTimeout(500);
  await shot(page, 'metric_chart');

  // 3. Optional: the comparison report, as the parent run's artifact.
  if (spec.reportRunId) {
    await page.goto(`${spec.url}/#/experiments/${spec.experimentId}/runs/${spec.reportRunId}/artifacts/report/report.html`);
    await closeAssistant(page);
    const frame = page.frameLocator('iframe').first();
    check('report.html renders in the artifact viewer', await visible(frame.locator('table')));
    await page.waitForTimeout(1000);
    await shot(page, 'report_artifact');
  }

  // 3b. Optional: the parent's image artifacts (the optimizer suite's performance profile).
  for (const path of spec.artifactImages ?? []) {
    await page.goto(`${spec.url}/#/experiments/${spec.experimentId}/runs/${spec.reportRunId}/artifacts/${path}`);
    await closeAssistant(page);
    const file = path.split('/').pop();
    // (the viewer keeps the file it shows when only the URL's hash changes: pick it in the tree)
    await page.getByText(file, { exact: true }).first().click().catch(() => {});
    const title = await visible(page.getByText(path, { exact: true }));
    // the plot itself: an image as wide as a figure (the page's icons are small), loaded
    const drawn = await page.waitForFunction(() => [...document.images].some(
      (img) => img.complete && img.naturalWidth >= 400), null, { timeout }).then(() => true, () => false);
    check(`artifact viewer shows ${path}`, title, path);
    check(`artifact ${path} is drawn in the artifact viewer`, drawn, path);
    await page.waitForTimeout(500);
    await shot(page, file.replace(/\.png$/, '_artifact'));
  }

  // 3c. Optional: a run's page shows the given texts (the suite parent's score/<optimizer> metrics).
  if (spec.runPage) {
    await page.goto(`${spec.url}/#/experiments/${spec.experimentId}/runs/${spec.runPage.runId}`);
    await closeAssistant(page);
    for (const text of spec.runPage.texts) {
      check(`run page shows ${text}`, await visible(page.getByText(text, { exact: true })), text);
    }
    await page.waitForTimeout(500);
    await shot(page, spec.runPage.name ?? 'run_page');
  }

  // 4. Optional: a report.html file on its own, the whole page.
  if (spec.reportFile) {
    await page.setViewportSize({ width: 1100, height: 800 });
    await page.goto(`file://${spec.reportFile}`);
    check('report.html shows its table and plots', (await visible(page.locator('table')))
      && await page.evaluate(() => [...document.images].every((img) => img.complete && img.naturalWidth > 0)));
    await shot(page, 'report_page', { fullPage: true });
  }
} catch (err) {
  check('browser session', false, err.stack ?? err);
} finally {
  if (page && checks.some((c) => !c.ok)) await shot(page, 'failure').catch(() => {});
  await browser.close();
}
const ok = checks.length > 0 && checks.every((c) => c.ok);
console.log(JSON.stringify({ ok, checks, screenshots }));
process.exit(ok ? 0 : 1);
