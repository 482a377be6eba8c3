// Drives the sipcast web console in Debian's headless Chromium (playwright-core, no browser download).
// Called by tests/console_in_chromium.rs with the gateway, callee and RTMP server in the environment;
// prints one JSON line with what it saw and exits non-zero on any failure (with a screenshot).
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env("SIPCAST_URL");
const callId = env("CALL_ID");
const shots = env("SCREENSHOT_DIR");
const wait = { timeout: 30000 };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
const consoleErrors = [];
// Script errors only: Chromium also logs every non-2xx fetch (find_all's 404, the 501s) as an error.
page.on("console", (m) => {
  if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) consoleErrors.push(m.text());
});
page.on("pageerror", (e) => consoleErrors.push(String(e)));
const row = (field) => page.locator(`tr[data-call-id="${callId}"] td[data-field="${field}"]`);

try {
  await page.goto(base + "/");
  await page.locator("#sse-state", { hasText: "events: live" }).waitFor(wait);

  await page.fill("#f-callId", callId);
  await page.fill("#f-callee", env("CALLEE"));
  await page.fill("#f-sipDomain", "127.0.0.1");
  await page.fill("#f-sipPort", env("SIP_PORT"));
  await page.fill("#f-sipLogin", "console");
  await page.fill("#f-sipPassword", env("SIP_PASSWORD"));
  await page.fill("#f-rtmpUrl", env("RTMP_URL"));
  await page.fill("#f-rtmpStream", env("RTMP_STREAM"));
  await page.click("#start-call");
  await page.locator("#start-result", { hasText: "OK" }).waitFor(wait);

  // Live from the event stream.
  await row("status").filter({ hasText: "ESTABLISHED" }).waitFor(wait);
  await row("rtmpStreamStatus").filter({ hasText: "RTMP_STREAM_ACTIVE" }).waitFor(wait);

  // Remembered in the browser, the password excepted.
  const stored = await page.evaluate(() => localStorage.getItem("sipcast.console.startup"));
  await page.reload();
  await page.locator("#sse-state", { hasText: "events: live" }).waitFor(wait);
  const restored = {
    callee: await page.inputValue("#f-callee"),
    sipPassword: await page.inputValue("#f-sipPassword"),
  };
  await row("status").filter({ hasText: "ESTABLISHED" }).waitFor(wait);

  // One DTMF digit from the keypad.
  await page.selectOption("#dtmf-call", callId);
  await page.click('#keypad button[data-digit="5"]');
  const dtmf = page.locator("#dtmf-result");
  await dtmf.filter({ hasText: "DTMF 5" }).waitFor(wait);
  const dtmfResult = await dtmf.textContent();

  // A push target: a second stream of the live call.
  await page.selectOption("#push-call", callId);
  await page.fill("#push-url", env("RTMP_URL") + "/console-second");
  await page.click("#push-add");
  await page.locator("#push-result", { hasText: "push/startup" }).waitFor(wait);
  const pushResult = await page.locator("#push-result").textContent();

  await page.screenshot({ path: `${shots}/console-established.png`, fullPage: true });

  // Hang up from the table.
  await page.click(`tr[data-call-id="${callId}"] button[data-action="hangup"]`);
  await row("status").filter({ hasText: "FINISH" }).waitFor(wait);
  await page.screenshot({ path: `${shots}/console-finished.png`, fullPage: true });

  console.log(JSON.stringify({ ok: true, stored, restored, dtmfResult, pushResult, consoleErrors }));
  await browser.close();
} catch (e) {
  try { await page.screenshot({ path: `${shots}/console-failure.png`, fullPage: true }); } catch (_) { /* */ }
  console.log(JSON.stringify({ ok: false, error: String(e), consoleErrors }));
  await browser.close();
  process.exit(1);
}
