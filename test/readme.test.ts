/**
 * Every command the README shows works as written. Each command line of its bash blocks is run here, or is one that
 * CI (`.ci/run`) or test/e2e-pulumi-up.test.ts runs; a line this test does not know fails it, so a new README
 * command cannot go unchecked.
 *
 * Job commands run the way `npm run job --` runs them (`node bin/cloudcompute.js`), in a directory holding the
 * files the README names (Pulumi.dev.yaml from the repository, my-study.yaml, subjects.txt). A command that would
 * launch a job on AWS (no account here) is run with `--dry-run` added: its flags and config are checked as written.
 * The inspecting commands (`list`, `status`, `logs`, `history`, `cancel`, `gc`) run against a real local job.
 */
import { expect } from "chai";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { CLI, DriverSandbox, localJobConfig, REPO_ROOT, startDriverSandbox, withoutSdkNoise } from "../sandbox/driver-sandbox";

/** The command lines of the README's bash blocks: comments dropped, continuation lines joined. */
function readmeCommands(file = path.join(REPO_ROOT, "README.md")): string[] {
  const text = fs.readFileSync(file, "utf8");
  const commands: string[] = [];
  for (const block of text.matchAll(/```bash\n([\s\S]*?)```/g)) {
    const joined = block[1].replace(/\\\n\s*/g, " ");
    for (const line of joined.split("\n")) {
      const command = line.replace(/\s+#\s.*$/, "").trim();
      if (command) commands.push(command);
    }
  }
  return commands;
}

/** Lines CI runs (.ci/run runs each as written) and lines the `pulumi up` end-to-end test walks through. */
const RUN_BY_CI = ["bash scripts/setup.sh", "npm run demo", "npm test"];
const PULUMI_UP_STEPS = /^(npm ci && npm run build:agent|export PULUMI_CONFIG_PASSPHRASE=|pulumi login |JOB=|cp Pulumi\.dev\.yaml |pulumi stack init |pulumi up$|aws s3 cp "\$\(pulumi stack output markerUrl\)" -$|pulumi refresh --yes && pulumi destroy --yes$)/;
const JOB_COMMAND = /^(?:npm run (?:-s )?job --|npx cloudcompute)(?: (.*))?$/;
const INSPECT = new Set(["list", "status", "logs", "history", "cancel", "gc"]);

describe("README: every command works as written", function () {
  this.timeout(240_000);
  let sandbox: DriverSandbox;
  let cwd: string;
  let jobId: string;

  before(async () => {
    sandbox = await startDriverSandbox();
    await sandbox.seed(["sub-readme"]);
    // The files the README's commands name, in a directory of their own.
    cwd = fs.mkdtempSync(path.join(sandbox.home, "readme-"));
    fs.copyFileSync(path.join(REPO_ROOT, "Pulumi.dev.yaml"), path.join(cwd, "Pulumi.dev.yaml"));
    // A study's config: the example with the input URL templated per subject.
    const example = fs.readFileSync(path.join(REPO_ROOT, "Pulumi.dev.yaml"), "utf8");
    const study = example.replace(/url: s3:\/\/\S+/, "url: s3://my-lab-inputs/t1/{subject}.tgz");
    expect(study, "the example has an input url to template").to.not.equal(example);
    fs.writeFileSync(path.join(cwd, "my-study.yaml"), study);
    fs.writeFileSync(path.join(cwd, "subjects.txt"), "NDARINV1A2B3C4D\nsub-01\n");
    // One real job for the inspecting commands.
    const config = sandbox.writeConfig("readme.yaml", localJobConfig(sandbox, { image: "none", runtime: "none", command: ["sh", "-c", 'cp "$1" "$2/"', "sh", "{input}", "{output}"] }));
    const run = await sandbox.run(["--config", config, "--subject", "sub-readme", "--json"]);
    expect(run.code, run.stderr).to.equal(0);
    jobId = JSON.parse(run.stdout).jobId;
  });
  after(async () => {
    await sandbox?.stop();
  });

  /** Run a job command's arguments as `npm run job --` does, in the README's directory. */
  const runJob = (args: string) => {
    const env: Record<string, string | undefined> = { ...process.env, ...sandbox.env };
    delete env.PULUMI_BACKEND_URL; // never the developer's own backend: the sandbox's home holds the state
    const res = spawnSync(process.execPath, [CLI, ...shellWords(args)], { cwd, env, encoding: "utf8", timeout: 120_000 });
    return { code: res.status, stdout: res.stdout, stderr: withoutSdkNoise(res.stderr ?? "") };
  };

  it("knows every command line of the README (a new one must be added here)", () => {
    const unknown = readmeCommands().filter((line) => !RUN_BY_CI.includes(line) && !PULUMI_UP_STEPS.test(line) && !JOB_COMMAND.test(line));
    expect(unknown).to.deep.equal([]);
  });

  it("CI runs the setup, demo and test commands as the README writes them", () => {
    const ci = fs.readFileSync(path.join(REPO_ROOT, ".ci", "run"), "utf8");
    for (const line of readmeCommands().filter((l) => RUN_BY_CI.includes(l))) expect(ci, line).to.include(line);
  });

  it("the job commands: launches checked with --dry-run, inspecting commands run on a real job, JSON parses", () => {
    const jobLines = readmeCommands().filter((line) => JOB_COMMAND.test(line));
    expect(jobLines.length).to.be.at.least(8);
    for (const line of jobLines) {
      const args = (JOB_COMMAND.exec(line)![1] ?? "").replaceAll("<job>", jobId);
      const inspect = INSPECT.has(args.split(" ")[0]);
      const launch = !inspect && !/--dry-run/.test(args);
      const res = runJob(launch ? `${args} --dry-run --json` : args);
      expect(res.code, `${line}\n${res.stderr}`).to.equal(0);
      if (/--json/.test(args) || launch) expect(() => JSON.parse(res.stdout), `${line}: stdout is JSON`).to.not.throw();
      // npm prints its banner on stdout unless -s: JSON from `npm run job --` would not parse.
      if (/--json/.test(args)) expect(line, "JSON needs npm run -s").to.match(/^(npm run -s |npx )/);
    }
  });
});

/**
 * Split a README command's arguments as bash would for plain words and single or double quotes (all the README
 * uses). Never through a shell: README text must not run as code in tests or CI.
 */
function shellWords(text: string): string[] {
  if (/[$`;|&<>\\]/.test(text)) throw new Error(`README command needs a shell to read: ${text}`);
  const words: string[] = [];
  for (const m of text.matchAll(/'([^']*)'|"([^"]*)"|(\S+)/g)) words.push(m[1] ?? m[2] ?? m[3]);
  return words;
}
