"""A fleet under traffic (issue 31): 3 members on loopback against a real etcd, 8 clients
spread across them, 20 fleet switches and 5 rollbacks while they encode; then the same
switches on a single daemon (no [fleet]) for comparison.

    python bench/bench_fleet.py --switches 20 --rollbacks 5

Members serve the fake backend (tests/fakebackend.py, 2 ms a call: the coordination is what
is measured, not a model) in their own processes, every version preloaded, as a fleet
rolling out an already-deployed version does. Reported: failed requests (target 0); replies
whose generation is older than the last commit the client had seen when it sent them
(target 0); the time from the switch to its reply (every member serving it) p50/p99,
through the client and through `hs switch` (hs's start-up included).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from hotswapd.errors import HotswapError  # noqa: E402
from tests.conftest import HS  # noqa: E402
from tests.daemons import daemon_env  # noqa: E402
from tests.fleets import etcd_server, member_config, start_member, wait_for  # noqa: E402

VERSIONS: dict[str, dict[str, object]] = {f"v{i}": {"scale": float(i), "preload": True} for i in (1, 2, 3)}
FAKE_SLEEP = {"HOTSWAP_FAKE_SLEEP": "0.002"}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Traffic:
    """Clients encoding in a loop, each checking every reply's generation against the last
    commit it had seen before sending."""

    def __init__(self, endpoints: list[str], clients: int) -> None:
        self.committed = 0  # the last commit any switch reply announced
        self.requests = 0
        self.failures: list[str] = []
        self.stale = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(endpoints[i % len(endpoints)],)) for i in range(clients)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self, endpoint: str) -> None:
        from hotswapd import Client

        with Client(endpoint, timeout=60) as client:
            while not self._stop.is_set():
                floor = self.committed
                try:
                    result = client.encode(["a sentence to embed"], "m")
                except HotswapError as exc:
                    with self._lock:
                        self.failures.append(f"{type(exc).__name__}: {exc.message}")
                    continue
                with self._lock:
                    self.requests += 1
                    if result.generation is not None and result.generation < floor:
                        self.stale += 1


def run_switches(endpoints: list[str], traffic: Traffic, switches: int, rollbacks: int, fleet: bool) -> dict[str, list[float]]:
    from hotswapd import Client

    times: dict[str, list[float]] = {"client": [], "hs": []}
    labels: list[tuple[float, str]] = []  # (seconds, which switch): the slowest are printed
    order = ["v2", "v3", "v1"]
    rollback_every = max(1, switches // max(rollbacks, 1))
    done_rollbacks = 0
    for index in range(switches):
        endpoint = endpoints[index % len(endpoints)]
        target = order[index % len(order)]
        started = time.perf_counter()
        if index % 2:  # every other switch through the command a user types
            env = daemon_env(HOTSWAPD_SOCKET=endpoint, HOTSWAPD_NO_AUTOSTART="1")
            done = subprocess.run([str(HS), "switch", "m", target, "--json"], env=env, capture_output=True, timeout=300)
            if done.returncode != 0:
                raise RuntimeError(done.stderr.decode())
            import json

            answer = json.loads(done.stdout)
            times["hs"].append(time.perf_counter() - started)
            labels.append((times["hs"][-1], f"#{index} hs switch m {target}"))
        else:
            with Client(endpoint, timeout=300) as client:
                answer = client.switch("m", target)
            times["client"].append(time.perf_counter() - started)
            labels.append((times["client"][-1], f"#{index} client switch m {target}"))
        if fleet:
            traffic.committed = max(traffic.committed, int(answer["generation"]))
        if done_rollbacks < rollbacks and index % rollback_every == rollback_every - 1:
            started = time.perf_counter()
            with Client(endpoints[(index + 1) % len(endpoints)], timeout=300) as client:
                answer = client.rollback("m")
            times["client"].append(time.perf_counter() - started)
            labels.append((times["client"][-1], f"#{index} client rollback"))
            if fleet:
                traffic.committed = max(traffic.committed, int(answer["generation"]))
            done_rollbacks += 1
    times["slowest"] = sorted(labels, reverse=True)[:3]  # type: ignore[assignment]
    return times


def phase(name: str, endpoints: list[str], args: argparse.Namespace, fleet: bool) -> dict[str, object]:
    traffic = Traffic(endpoints, args.clients)
    traffic.start()
    time.sleep(1.0)
    started = time.perf_counter()
    times = run_switches(endpoints, traffic, args.switches, args.rollbacks, fleet)
    elapsed = time.perf_counter() - started
    time.sleep(1.0)
    traffic.stop()
    every = times["client"] + times["hs"]
    return {"name": name, "requests": traffic.requests, "failed": len(traffic.failures), "stale": traffic.stale, "seconds": elapsed,
            "client": times["client"], "hs": times["hs"], "all": every, "failures": traffic.failures[:5], "slowest": times["slowest"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--rollbacks", type=int, default=5)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hs-bench-fleet-"))
    results = []
    with etcd_server(work) as etcd:
        members = [start_member(work, name, member_config(work, "bench", name, etcd.url, VERSIONS), env=FAKE_SLEEP) for name in ("a", "b", "c")]
        try:
            from hotswapd import Client

            with Client(members[0].endpoint) as client:
                wait_for(lambda: len(client.fleet()["members"]) == 3, 60, "every member in etcd")
            results.append(phase("fleet of 3 (etcd)", [m.endpoint for m in members], args, fleet=True))
        finally:
            for member in members:
                member.stop()
    single_config = member_config(work / "single", "unused", "s", "http://127.0.0.1:1", VERSIONS)
    single_config = single_config.split("[models.m]", 1)[1]
    single = start_member(work / "single", "s", "[models.m]" + single_config, env=FAKE_SLEEP)
    try:
        results.append(phase("single daemon", [single.endpoint], args, fleet=False))
    finally:
        single.stop()
    print(f"{args.switches} switches and {args.rollbacks} rollbacks under {args.clients} clients; switch times to the reply (every member serving it)")
    print(f"{'setup':<20} {'requests':>9} {'failed':>7} {'stale':>6} {'p50 ms':>8} {'p99 ms':>8} {'hs p50 ms':>10}")
    for row in results:
        every = row["all"]
        print(f"{row['name']:<20} {row['requests']:>9} {row['failed']:>7} {row['stale']:>6} {statistics.median(every) * 1000:>8.1f} "
              f"{percentile(every, 0.99) * 1000:>8.1f} {statistics.median(row['hs']) * 1000:>10.1f}")
        print("  slowest:", ", ".join(f"{label} {seconds * 1000:.0f} ms" for seconds, label in row["slowest"]))
        if row["failures"]:
            print("  failures:", "; ".join(row["failures"]))


if __name__ == "__main__":
    main()
