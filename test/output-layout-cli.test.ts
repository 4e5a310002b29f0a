/**
 * `--output-layout` through the CLI, nothing created: dry-run shows the layout, the bids results folder and the
 * description's URL; the config key does the same; a bad layout or a subject with no BIDS label is exit 2.
 */
import { expect } from "chai";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { CLI } from "../sandbox/driver-sandbox";

describe("--output-layout through the CLI (dry run)", function () {
  this.timeout(60_000);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "cc-layout-"));
  const home = path.join(tmp, "home");
  const base = "config:\n  aws:region: us-east-1\n  cloudcompute:image: neuronets/kwyk:latest-cpu\n  cloudcompute:outputPrefix: s3://lab-results/kwyk\n  cloudcompute:instanceType: m5.4xlarge\n  cloudcompute:inputs: '[\"s3://lab-data/abcd/{subject}.tgz\"]'\n";
  const config = path.join(tmp, "study.yaml");
  const bidsConfig = path.join(tmp, "bids.yaml");
  fs.writeFileSync(config, base);
  fs.writeFileSync(bidsConfig, `${base}  cloudcompute:outputLayout: bids\n`);
  const cli = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, CLOUDCOMPUTE_HOME: home } });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it("--output-layout bids: the spec says bids, results go to sub-<label>/, the description to the prefix", () => {
    for (const args of [["--config", config, "--output-layout", "bids"], ["--config", bidsConfig]]) {
      const res = cli([...args, "--subject", "NDAR_INV1A2B3C4D", "--dry-run", "--json"]);
      expect(res.status, res.stderr).to.equal(0);
      const out = JSON.parse(res.stdout);
      expect(out.spec.outputs.layout).to.equal("bids");
      expect(out.resultsUrl).to.equal("s3://lab-results/kwyk/sub-NDARINV1A2B3C4D/");
      expect(out.datasetDescriptionUrl).to.equal("s3://lab-results/kwyk/dataset_description.json");
    }
    const plain = JSON.parse(cli(["--config", config, "--subject", "NDAR_INV1A2B3C4D", "--dry-run", "--json"]).stdout);
    expect(plain.spec.outputs.layout).to.equal("subject");
    expect(plain.resultsUrl).to.equal("s3://lab-results/kwyk/NDARINV1A2B3C4D/");
    expect(plain).not.to.have.property("datasetDescriptionUrl");
    expect(fs.existsSync(path.join(home, "state")), "nothing created").to.equal(false);
  });

  it("a batch dry run shows each subject's bids folder", () => {
    const subjects = path.join(tmp, "subjects.txt");
    fs.writeFileSync(subjects, "NDAR_INV1A2B3C4D\nsub-01\n");
    const res = cli(["--config", bidsConfig, "--subjects-file", subjects, "--dry-run", "--json"]);
    expect(res.status, res.stderr).to.equal(0);
    expect(JSON.parse(res.stdout).jobs.map((job: { resultsUrl: string }) => job.resultsUrl)).to.deep.equal(["s3://lab-results/kwyk/sub-NDARINV1A2B3C4D/", "s3://lab-results/kwyk/sub-01/"]);
  });

  it("a batch whose subjects share one bids folder (01 and sub-01, HCP_1 and HCP1) is exit 2 naming them, before anything exists", () => {
    const subjects = path.join(tmp, "clash.txt");
    fs.writeFileSync(subjects, "01\nNDAR_INV1A2B3C4D\nsub-01\nHCP_1\nHCP1\n");
    for (const dry of [["--dry-run"], []]) {
      const res = cli(["--config", bidsConfig, "--subjects-file", subjects, ...dry]);
      expect(res.status, res.stderr).to.equal(2);
      expect(res.stderr).to.include("01, sub-01").and.include("sub-01/").and.include("HCP_1, HCP1");
    }
    expect(cli(["--config", config, "--subjects-file", subjects, "--dry-run", "--json"]).status, "layout subject: distinct folders").to.equal(0);
    expect(fs.existsSync(path.join(home, "state")), "nothing created").to.equal(false);
  });

  it("refuses an unknown layout and a subject with no BIDS label, exit 2, before anything exists", () => {
    const bad = cli(["--config", config, "--subject", "sub-01", "--output-layout", "derivatives", "--dry-run"]);
    expect(bad.status).to.equal(2);
    expect(bad.stderr).to.include("output-layout").and.include("bids");
    const label = cli(["--config", bidsConfig, "--subject", "sub-01_x", "--dry-run"]);
    expect(label.status).to.equal(2);
    expect(label.stderr).to.include('subject "sub-01_x" gives the BIDS folder "sub-01_x"').and.include("letters and digits only");
    expect(fs.existsSync(path.join(home, "state")), "nothing created").to.equal(false);
  });
});
