"""A small closed-loop HTTP load client (aiohttp) for the benches: N requests, C concurrent, one body."""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp


async def run(url: str, n: int, concurrency: int, body: bytes) -> dict:
    statuses: dict[int, int] = {}
    counter = iter(range(n))

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in counter:
            async with session.post(url, data=body, headers={"content-type": "application/json"}) as r:
                await r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1

    t0 = time.perf_counter()
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as s:
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))
    return {"seconds": time.perf_counter() - t0, "statuses": statuses}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("-c", type=int, default=32)
    ap.add_argument("--body-file", required=True)
    a = ap.parse_args()
    with open(a.body_file, "rb") as f:
        body = f.read()
    print(json.dumps(asyncio.run(run(a.url, a.n, a.c, body))))
