// Drives aicp's page in headless Chromium (Debian's, through playwright-core): draws a "1" with
// the mouse, picks a picture and drops it on the pad, checks a phone-sized window, and saves
// screenshots.
//
//   node page.cjs URL SCREENSHOT_DIR PICTURE [API_KEY]
//
// AICP_PLAYWRIGHT_CORE: the playwright-core package's directory; AICP_CHROMIUM: the browser.
// Prints one JSON line of what it saw; exits 1 on any failure.
"use strict";
const path = require("path");
const { chromium, devices } = require(process.env.AICP_PLAYWRIGHT_CORE);

const [url, shots, picture, apiKey] = process.argv.slice(2);

async function ready(page) {
  await page.goto(url);
  if (apiKey) {
    await page.waitForSelector("#key-form:not([hidden])", { timeout: 10000 });
    await page.fill("#key", apiKey);
    await page.click("#key-form button");
  }
  await page.waitForFunction(() => document.querySelector("#model").options.length > 0, null,
                             { timeout: 10000 });
}

async function seen(page) {
  await page.waitForSelector("#bars .bar", { timeout: 10000 });
  return page.evaluate(() => {
    const pixels = document.getElementById("seen").getContext("2d").getImageData(0, 0, 28, 28).data;
    let ink = 0;
    for (let i = 0; i < pixels.length; i += 4) if (pixels[i] > 128) ink++;
    const bars = [...document.querySelectorAll("#bars .bar")];
    // What a person sees: how much of each bar's track its fill covers, in percent of the
    // track's rendered width, beside the percentage written next to it.
    const drawn = bars.map(bar => {
      const track = bar.querySelector(".track").getBoundingClientRect().width;
      const fill = bar.querySelector(".fill").getBoundingClientRect().width;
      return { filled: track > 0 ? 100 * fill / track : 0,
               written: parseFloat(bar.querySelector(".value").textContent) };
    });
    return {
      top: bars[0].dataset.class,
      drawn,
      bars: bars.length,
      ink,
      status: document.getElementById("status").textContent,
    };
  });
}

// Drops the picture file on the pad, as a person dragging it from their files would, and
// waits for the answer's bars.
async function dropPicture(page) {
  const bytes = require("fs").readFileSync(picture).toString("base64");
  const dropped = await page.evaluateHandle(base64 => {
    const data = Uint8Array.from(atob(base64), c => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([data], "digit.png", { type: "image/png" }));
    return transfer;
  }, bytes);
  await page.dispatchEvent("#pad", "dragover", { dataTransfer: dropped });
  await page.dispatchEvent("#pad", "drop", { dataTransfer: dropped });
  await page.waitForFunction(() => !!document.querySelector("#bars .bar"), null, { timeout: 10000 });
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.AICP_CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  const errors = [];
  const watch = page => {
    page.on("pageerror", e => errors.push(e.message));
    // A 401 before the key is given is the page's cue to ask for it, not an error.
    page.on("console", m => {
      if (m.type() === "error" && !(apiKey && m.text().includes("401"))) errors.push(m.text());
    });
  };
  try {
    const page = await browser.newPage({ viewport: { width: 900, height: 720 } });
    watch(page);
    await ready(page);
    const models = await page.$$eval("#model option", options => options.map(o => o.value));
    const chosen = await page.$eval("#model", select => select.value);

    // A "1": one stroke down the middle of the pad.
    const pad = await page.locator("#pad").boundingBox();
    const x = pad.x + pad.width * 0.5;
    await page.mouse.move(x, pad.y + pad.height * 0.15);
    await page.mouse.down();
    for (let i = 1; i <= 25; i++) {
      await page.mouse.move(x + i * 0.4, pad.y + pad.height * (0.15 + 0.7 * i / 25));
    }
    await page.mouse.up();
    // The prediction follows the finished stroke.
    await page.waitForFunction(() => !!document.querySelector("#bars .bar"), null, { timeout: 10000 });
    await page.waitForTimeout(300);
    const drawn = await seen(page);
    await page.screenshot({ path: path.join(shots, "drawn.png"), fullPage: true });

    // A picture from the file picker.
    await page.click("#clear");
    await page.setInputFiles("#file", picture);
    await page.waitForFunction(() => !!document.querySelector("#bars .bar"), null, { timeout: 10000 });
    const picked = await seen(page);
    await page.screenshot({ path: path.join(shots, "picture.png"), fullPage: true });

    // The same picture dropped on the pad.
    await page.click("#clear");
    await dropPicture(page);
    const drop = await seen(page);

    // A phone: the page fits its width, and the pad is the first thing on it.
    const phone = await browser.newPage({ ...devices["Pixel 7"] });
    watch(phone);
    await ready(phone);
    // A picture dropped there too: results, bars and preview must show on a narrow screen.
    await dropPicture(phone);
    const onPhone = await seen(phone);
    const fits = await phone.evaluate(() =>
      document.documentElement.scrollWidth <= window.innerWidth &&
      document.getElementById("pad").getBoundingClientRect().right <= window.innerWidth);
    await phone.screenshot({ path: path.join(shots, "phone.png"), fullPage: true });

    console.log(JSON.stringify({ models, chosen, drawn, picked, drop, onPhone, fits, errors }));
  } finally {
    await browser.close();
  }
})().catch(e => {
  console.error(e);
  process.exit(1);
});
