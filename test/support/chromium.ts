/**
 * Headless Chromium for tests that look at a page as a browser renders it (the batch report): the DOM after parsing,
 * and a screenshot. Debian's `chromium` package (scripts/setup.sh installs it); CHROMIUM names another binary.
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { pathToFileURL } from "node:url";

export function chromiumBinary(): string {
  const candidates = [process.env.CHROMIUM, "/usr/bin/chromium", "/usr/bin/chromium-browser"].filter((c): c is string => Boolean(c));
  const found = candidates.find((c) => fs.existsSync(c));
  if (!found) throw new Error(`chromium is required for this test and was not found (looked at ${candidates.join(", ")}): apt-get install chromium, or set CHROMIUM`);
  return found;
}

/** Run headless Chromium on a local file with `extra` flags; its own throwaway profile, so runs never share state. */
function runChromium(file: string, extra: string[]): string {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "cc-chromium-"));
  try {
    const res = spawnSync(
      chromiumBinary(),
      ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars", `--user-data-dir=${profile}`, ...extra, pathToFileURL(file).href],
      // A guard against a hung browser, not an assertion about its speed.
      { encoding: "utf8", timeout: 120_000, maxBuffer: 64 * 1024 * 1024 },
    );
    if (res.error) throw new Error(`chromium failed to run: ${res.error.message}`);
    if (res.status !== 0) throw new Error(`chromium exited ${res.status}: ${res.stderr}`);
    return res.stdout;
  } finally {
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

/** The page's DOM as Chromium serializes it after loading `file`. */
export function dumpDom(file: string): string {
  return runChromium(file, ["--dump-dom"]);
}

/** A PNG of `file` rendered at `width`×`height`. */
export function screenshot(file: string, png: string, width = 1200, height = 1600): void {
  runChromium(file, [`--screenshot=${png}`, `--window-size=${width},${height}`]);
  if (!fs.existsSync(png)) throw new Error(`chromium wrote no screenshot at ${png}`);
}
