// Open a page in a running headless Chromium, click the button with the given label, save a
// screenshot. Over the DevTools protocol, because a view such as an asset's metadata plots
// is reached by a click, not by a URL.
//   node --experimental-websocket click_and_capture.mjs WS_URL PAGE_URL LABEL OUT.png
import { writeFileSync } from "node:fs";

const [wsUrl, pageUrl, label, out] = process.argv.slice(2);
const ws = new WebSocket(wsUrl);
let nextId = 0;
const pending = new Map();
const send = (method, params = {}, sessionId) =>
  new Promise((resolve, reject) => {
    const id = ++nextId;
    pending.set(id, { resolve, reject });
    ws.send(JSON.stringify({ id, method, params, sessionId }));
  });
ws.onmessage = (event) => {
  const message = JSON.parse(event.data);
  const waiter = pending.get(message.id);
  if (!waiter) return;
  pending.delete(message.id);
  if (message.error) waiter.reject(new Error(message.error.message));
  else waiter.resolve(message.result);
};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

ws.onopen = async () => {
  try {
    const { targetId } = await send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
    await send("Emulation.setDeviceMetricsOverride",
      { width: 1600, height: 1000, deviceScaleFactor: 1, mobile: false }, sessionId);
    await send("Page.navigate", { url: pageUrl }, sessionId);
    await sleep(10000);
    const click = `(() => { const b = [...document.querySelectorAll("button")]
      .find((e) => e.textContent.trim().endsWith(${JSON.stringify(label)}));
      if (b) { b.click(); return true; } return false; })()`;
    const { result } = await send("Runtime.evaluate", { expression: click }, sessionId);
    if (!result.value) {
      const { result: labels } = await send("Runtime.evaluate", { expression:
        `[...document.querySelectorAll("button")].map((e) => e.textContent.trim()).join(" | ")` },
        sessionId);
      throw new Error(`no button labelled ${label} on ${pageUrl} (buttons: ${labels.value})`);
    }
    await sleep(5000);
    const { data } = await send("Page.captureScreenshot", { format: "png" }, sessionId);
    writeFileSync(out, Buffer.from(data, "base64"));
    process.exit(0);
  } catch (error) {
    console.error(error.message);
    process.exit(1);
  }
};
