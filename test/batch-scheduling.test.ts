/**
 * The batch's bounds, unit level: jobs in flight and engine workers never exceed their slots (adopted jobs take a
 * place beyond them), and the shared poll pace spreads the looks of many jobs over time instead of multiplying them.
 */
import { expect } from "chai";
import { Slots } from "../driver/batch-scheduler";
import { PollPacer } from "../driver/poll-pacer";

describe("batch scheduling: slots and pace", () => {
  it("never lets more than `size` holders in at once, and lets the waiting ones in as places free", async () => {
    const slots = new Slots(3);
    let inside = 0;
    let most = 0;
    const work = async (i: number) =>
      slots.with(async () => {
        inside++;
        most = Math.max(most, inside);
        await new Promise((r) => setTimeout(r, (i % 4) * 3));
        inside--;
        return i;
      });
    const done = await Promise.all(Array.from({ length: 20 }, (_, i) => work(i)));
    expect(done).to.deep.equal(Array.from({ length: 20 }, (_, i) => i));
    expect(most).to.equal(3);
  });

  it("an adopted job takes a place beyond the size; newcomers wait until the count is below it again", async () => {
    const slots = new Slots(1);
    slots.force();
    slots.force(); // two adopted jobs on a batch of concurrency 1
    let admitted = false;
    const waiting = slots.take().then(() => (admitted = true));
    slots.give();
    await new Promise((r) => setImmediate(r));
    expect(admitted, "one adopted job still runs: no room yet").to.equal(false);
    slots.give();
    await waiting;
    expect(admitted).to.equal(true);
  });

  it("a thousand waiting jobs are each looked at less often, within the pace; a few at the platform's interval", () => {
    const pacer = new PollPacer(20);
    expect(pacer.intervalFor(5, 10_000)).to.equal(10_000);
    expect(pacer.intervalFor(1000, 10_000)).to.equal(50_000);
    expect(() => new PollPacer(0)).to.throw(/positive/);
  });

  it("every waiter gets its turn, and an aborted waiter stops waiting", async () => {
    // Turns are reserved in order; a turn whose time has come when it is asked for is not waited for, so under load
    // they may resolve out of order: the pace bounds the rate, not the order.
    const pacer = new PollPacer(1000);
    const served: number[] = [];
    await Promise.all([0, 1, 2, 3, 4].map((i) => pacer.turn(new AbortController().signal).then(() => served.push(i))));
    expect(served.sort()).to.deep.equal([0, 1, 2, 3, 4]);
    const slow = new PollPacer(0.001);
    await slow.turn(new AbortController().signal); // the first turn is now
    const stop = new AbortController();
    const next = slow.turn(stop.signal);
    stop.abort();
    await next.then(() => expect.fail("the turn came"), (err: Error) => expect(err.name).to.equal("InterruptedError"));
  });
});
