"""Benchmark: throughput, latency, Astria requests per job, memory, against real conditions.

    python -m bench                     # every scenario, one table (issue 4's rows, then latency,
                                        # slow answers and an account limit)
    python -m bench --repeat 3          # each scenario three times; the table shows the median
    python -m bench --only "gen 3 s, latency 1 s" [--pool threads -c 8 --processes 1]
    python -m bench lanes               # priority lanes, fair tenants and cancellation
    python -m bench capacity            # Redis bytes per waiting job, commands and CPU per job
    python -m bench hostile             # another tenant beside a trickling webhook endpoint;
                                        # Redis bytes per job with a 4 MiB inline image
    python -m bench api                 # the HTTP API: POST latency at 200 clients, Prefer:
                                        # wait against the Python producer, held requests' memory
    python -m bench copies              # durable copies to S3: images/s, MB/s, outcome-to-stored

It starts its own Redis, the simulator, the receiver when a row needs callbacks, and the worker
processes; nothing else is touched.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from astria_local.redis_server import ThrowawayRedis
from bench import api, capacity, copies, hostile, lanes
from bench.run import Pool, ceiling
from bench.scenarios import RECOMMENDED, SCENARIOS, row, run


def print_table(rows: list[dict[str, str]]) -> None:
    columns = [c for c in rows[0] if any(r[c] for r in rows)]
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    print("| " + " | ".join(c.ljust(widths[c]) for c in columns) + " |")
    print("|" + "|".join("-" * (widths[c] + 2) for c in columns) + "|")
    for r in rows:
        print("| " + " | ".join(r[c].ljust(widths[c]) for c in columns) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", default="scenarios",
                        choices=["scenarios", "lanes", "capacity", "hostile", "api", "copies"])
    parser.add_argument("--only", action="append", help="run this scenario (repeatable)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each scenario this many times; the table shows the median run")
    parser.add_argument("--pool", help="worker pool instead of the recommended command's")
    parser.add_argument("-c", "--concurrency", type=int, default=RECOMMENDED.concurrency)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--no-ceiling", action="store_true", help="skip the no-op ceiling")
    args = parser.parse_args()
    pool = Pool(args.pool, args.concurrency, args.processes) if args.pool else None
    with ThrowawayRedis() as server:
        if args.what == "lanes":
            lanes.main(server.url, pool or RECOMMENDED)
            return
        if args.what == "capacity":
            capacity.main(server.url, pool or RECOMMENDED)
            return
        if args.what == "api":
            api.main(server.url, pool or RECOMMENDED)
            return
        if args.what == "copies":
            copies.main(server.url, pool or RECOMMENDED)
            return
        if args.what == "hostile":
            hostile.main(server.url, pool or RECOMMENDED)
            return
        chosen = [SCENARIOS[label] for label in args.only] if args.only else list(
            SCENARIOS.values())
        if pool:
            chosen = [replace(sc, pool=pool) for sc in chosen]
        for sc in list(chosen):  # a compared row needs its baseline in the same run
            if sc.baseline and SCENARIOS[sc.baseline] not in chosen:
                chosen.insert(0, replace(SCENARIOS[sc.baseline], pool=sc.pool))
        rows, makespans = [], {}
        for sc in chosen:
            runs = []
            for _ in range(args.repeat):
                rate = (ceiling(server.url, sc.pool or RECOMMENDED)
                        if sc.tuned and not args.no_ceiling else None)
                figures = run(server.url, sc)
                runs.append((figures.makespan, row(sc, figures, rate, makespans)))
                print(json.dumps(runs[-1][1]), flush=True)
            runs.sort(key=lambda r: r[0])
            makespan, median = runs[len(runs) // 2]
            makespans[sc.label] = makespan
            rows.append(median)
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
