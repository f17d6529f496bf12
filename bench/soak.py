"""Soak: 200,000 jobs through the hooks and the worker on a throwaway cluster, with retention
pruning finished jobs as it goes. Prints the queue table's and its indexes' sizes after every
round, to show they stay flat. Usage: .venv/bin/python bench/soak.py [--jobs N] [--round N]"""

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--round", type=int, default=10_000)
    parser.add_argument("--retention", default="15s")
    args = parser.parse_args()

    directory = tempfile.mkdtemp(prefix="mysmshook-soak-")
    Path(directory).chmod(0o755)
    port = 55477
    subprocess.run([REPO / "scripts" / "cluster.sh", "start", directory, str(port)], check=True)
    try:
        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute("create extension mysmshook")
            conn.execute("load 'mysmshook'")
            # The log provider: this measures the queue, not a mock's HTTP server.
            conn.execute(f"alter system set mysmshook.retention = '{args.retention}'")
            conn.execute("alter system set log_min_messages = 'warning'")
            conn.execute("select pg_reload_conf()")
            print(f"soak: {args.jobs} jobs in rounds of {args.round}, retention {args.retention}, "
                  "autovacuum on (default naptime), log provider")
            print(f"{'jobs':>8} {'seconds':>8} {'rows':>8} {'table kB':>9} {'indexes kB':>11} {'dead rows':>10}")
            started = time.monotonic()
            sizes = []
            for done in range(args.round, args.jobs + 1, args.round):
                conn.execute(
                    """select mysmshook.send_sms(jsonb_build_object(
                           'user', jsonb_build_object('id', 'u' || i, 'phone', '12125' || lpad((i %% 1000000)::text, 6, '0')),
                           'sms', jsonb_build_object('otp', '123456')))
                         from generate_series(1, %s) i""",
                    (args.round,),
                )
                conn.execute("call mysmshook.dequeue_and_run_jobs()")
                rows, table, indexes, dead = conn.execute(
                    """select (select count(*) from mysmshook.job_queue),
                              pg_relation_size('mysmshook.job_queue') / 1024,
                              pg_indexes_size('mysmshook.job_queue') / 1024,
                              (select n_dead_tup from pg_stat_user_tables where relid = 'mysmshook.job_queue'::regclass)"""
                ).fetchone()
                sizes.append((table, indexes))
                print(f"{done:>8} {time.monotonic() - started:>8.1f} {rows:>8} {table:>9} {indexes:>11} {dead:>10}")
            peak_first_half = max(t + i for t, i in sizes[: len(sizes) // 2])
            peak_second_half = max(t + i for t, i in sizes[len(sizes) // 2:])
            print(f"peak table+indexes: first half {peak_first_half} kB, second half {peak_second_half} kB "
                  f"({peak_second_half / peak_first_half:.2f}x)")
    finally:
        subprocess.run([REPO / "scripts" / "cluster.sh", "stop", directory], check=False)


if __name__ == "__main__":
    main()
