/**
 * `npm run bench -- scale` reports memory of process trees (bench/scale-rss.ts): a process's descendants must be
 * counted, a grandchild included, and the largest subtree below one child told apart from the whole tree.
 */
import { expect } from "chai";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { rssMb, sampleTree, TreeSampler } from "../bench/scale-rss";

describe("bench scale: process tree memory", function () {
  if (process.platform !== "linux") return;
  let root: ChildProcess;

  before(async () => {
    // root (sh) → child (sh) → grandchild (sleep), and a second child (sleep) beside it.
    root = spawn("sh", ["-c", "sh -c 'sleep 30; true' & sleep 30; wait"], { stdio: "ignore" });
    for (let i = 0; i < 100 && sampleTree(root.pid!, Date.now()).processes < 4; i++) await new Promise((r) => setTimeout(r, 20));
  });
  after(() => {
    for (const pid of collect(root.pid!)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone
      }
    }
  });

  function collect(pid: number): number[] {
    const out = [pid];
    // ps exits 1 when the process has no children.
    for (const line of spawnSync("ps", ["-o", "pid=", "--ppid", String(pid)], { encoding: "utf8" }).stdout.split("\n")) {
      if (line.trim()) out.push(...collect(Number(line)));
    }
    return out;
  }

  it("counts the root, its children and their children, and the largest child's subtree apart", () => {
    const sample = sampleTree(root.pid!, Date.now());
    expect(sample.processes, "sh, sh, sleep, sleep").to.equal(4);
    const everyProcess = collect(root.pid!).reduce((sum, pid) => sum + rssMb(pid), 0);
    expect(sample.treeMb).to.be.closeTo(everyProcess, 1);
    expect(sample.largestChildMb).to.be.greaterThan(0).and.lessThan(sample.treeMb);
  });

  it("a gone process weighs nothing", () => {
    expect(rssMb(2 ** 22 + 1)).to.equal(0);
  });

  it("peaks between marks come from the samples taken between them", () => {
    const sampler = new TreeSampler(root.pid!, 10_000);
    sampler.mark("from");
    sampler.mark("to");
    sampler.stop();
    expect(sampler.peak("treeMb", "from", "to")).to.be.greaterThan(0);
    expect(sampler.peak("treeMb", "no-such-mark")).to.equal(0);
  });
});
