// graphile-worker delivering the benchmark's jobs: each job is one HTTP POST of its payload to
// the mock provider, as a mysmshook job is. Usage:
//   node bench/graphile.js CONNECTION_STRING MOCK_URL JOBS CONCURRENCY defaults|tuned
// Queues JOBS jobs, runs a worker until all are done, prints the seconds it took.
// "tuned": a local queue (concurrency + 1 jobs fetched at once) and batched completion, the
// options graphile-worker documents for throughput.
"use strict";
const { Logger, run, makeWorkerUtils } = require("graphile-worker");
const { Agent, request } = require("undici");

async function main() {
  const [connectionString, url, jobsArg, concurrencyArg, mode] = process.argv.slice(2);
  const jobs = Number(jobsArg);
  const concurrency = Number(concurrencyArg);
  const agent = new Agent({ connections: concurrency, keepAliveTimeout: 60_000 });
  const quiet = new Logger(() => () => {});
  const utils = await makeWorkerUtils({ connectionString, logger: quiet });
  await utils.migrate();
  await utils.withPgClient(async (pg) => {
    await pg.query("delete from graphile_worker._private_jobs");
    await pg.query(
      `select graphile_worker.add_job('deliver', json_build_object(
                'to', '+12125' || lpad(i::text, 6, '0'), 'body', 'Your code is 123456'))
         from generate_series(1, $1) i`,
      [jobs],
    );
  });
  await utils.release();

  let done = 0;
  let finish;
  const finished = new Promise((resolve) => (finish = resolve));
  const preset =
    mode === "tuned"
      ? { worker: { localQueue: { size: concurrency + 1 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } }
      : {};
  const started = process.hrtime.bigint();
  const runner = await run({
    connectionString,
    concurrency,
    maxPoolSize: Math.max(10, concurrency + 2),
    noHandleSignals: true,
    pollInterval: 1000,
    logger: new Logger(() => () => {}),
    preset,
    taskList: {
      deliver: async (payload) => {
        const response = await request(url, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(payload),
          dispatcher: agent,
        });
        await response.body.text();
        if (response.statusCode >= 300) throw new Error(`HTTP ${response.statusCode}`);
        done += 1;
        if (done === jobs) finish();
      },
    },
  });
  await finished;
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await runner.stop();
  await agent.close();
  console.log(seconds.toFixed(3));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
