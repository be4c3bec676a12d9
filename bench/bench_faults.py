"""Faults from outside (issue 12): fuzzed frames, mutated config and state files, kill -9.

    python bench/bench_faults.py [--frames 100000] [--configs 1000] [--states 1000] [--kills 50]

A daemon process serves the test suite's fake backend (tests/fakebackend.py, no torch) with
two versions. Phases:
  frames   --frames fuzzed requests (valid headers with one field mutated, deep nesting,
           huge numbers, lone surrogates, wrong types, random bytes, extra frames), 64 in
           flight: every one must get a reply, none `internal_error`
  configs  --configs mutated config files (byte flips, truncation, garbage, nesting, huge
           numbers), each applied with `reload`: rejected or applied, never a death
  states   --states mutated state.json files: 50 of them at real daemon starts, the rest
           through the same loader and restore in this process
  kills    --kills times: kill -9 the daemon while a client switches v1 <-> v2 as fast as it
           can (mid-switch, mid-state-write), restart it: the state file must always parse
           and name v1 or v2, and the daemon must serve
Reported: deaths, internal errors, typed errors by code, RSS before/after each phase.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import zmq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from hotswapd import Client  # noqa: E402
from hotswapd.errors import HotswapError  # noqa: E402
from hotswapd.wire.protocol import OPS, decode_reply  # noqa: E402
from tests.daemons import REPO, RunningDaemon, daemon_env, short_socket_dir, wait_until_answering  # noqa: E402
from tests.inproc import fake_config  # noqa: E402

LAUNCH = "import sys; from hotswapd import backends; backends.BUILTIN['fake'] = 'tests.fakebackend'; from hotswapd.daemon.main import main; sys.exit(main(sys.argv[1:]))"
FUZZED_OPS = [op for op in OPS if op != "shutdown"]
OPTION_NAMES = ["normalize", "key", "deadline_ms", "limit", "all", "skip", "version", "strategy", "share", "steps", "force", "abort", "x"]
MiB = 2**20


def random_value(rng: random.Random, depth: int = 0) -> object:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, 1, -1, 2**31, 10**40, rng.randrange(-1000, 1000)])
    if kind == 3:
        return rng.choice([0.5, -1e308, 1e-300, float(rng.random())])
    if kind == 4:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(0, 12)))
    if kind == 5:
        return chr(rng.randrange(0xD800, 0xE000))  # a lone surrogate
    if kind == 6:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {rng.choice(OPTION_NAMES): random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}


def fuzzed_frames(rng: random.Random) -> list[bytes]:
    kind = rng.randrange(10)
    if kind == 0:
        return [rng.randbytes(rng.randrange(0, 200)) for _ in range(rng.randrange(1, 4))]
    if kind == 1:
        return [b"[" * rng.randrange(100, 3000)]
    if kind == 2:
        return [b'{"v": 1, "id": "f", "op": "ping", "model": ' + b"9" * rng.randrange(4000, 6000) + b"}"]
    header: dict[str, object] = {"v": 1, "id": f"f{rng.randrange(10**6)}", "op": rng.choice(FUZZED_OPS), "model": rng.choice([None, "m", "m@v1", "m@v2", "nope"]), "options": {}}
    field = rng.choice(["v", "id", "op", "model", "options", "extra", None])
    if field is not None:
        header[field] = random_value(rng)
    if rng.random() < 0.5:
        header["options"] = {rng.choice(OPTION_NAMES): random_value(rng) for _ in range(rng.randrange(1, 4))}
    text = json.dumps(header, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    payload = [rng.choice([b"text", rng.randbytes(rng.randrange(0, 50)), "é".encode()]) for _ in range(rng.randrange(0, 4))]
    return [text, *payload]


def start(workdir: Path, config: Path, endpoint: str) -> subprocess.Popen[bytes]:
    log = open(workdir / "daemon.log", "ab")  # noqa: SIM115 -- the process owns it
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "--socket", endpoint, "--config", str(config)],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        env=daemon_env(XDG_STATE_HOME=str(workdir / "state"), XDG_CACHE_HOME=str(workdir / "cache"), XDG_CONFIG_HOME=str(workdir / "config")),
    )
    wait_until_answering(RunningDaemon(process, endpoint, Path(), config, workdir / "daemon.log"), 30)
    return process


def phase_frames(endpoint: str, count: int, rng: random.Random) -> Counter[str]:
    codes: Counter[str] = Counter()
    context = zmq.Context.instance()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    in_flight = 0
    sent = 0
    while sent < count or in_flight:
        while sent < count and in_flight < 64:
            sock.send_multipart(fuzzed_frames(rng))
            sent += 1
            in_flight += 1
        if not sock.poll(10_000):
            codes["NO REPLY"] += in_flight
            break
        reply = sock.recv_multipart()
        in_flight -= 1
        try:
            _, body, _, ok = decode_reply([memoryview(frame) for frame in reply])
            codes["ok" if ok else body["code"]] += 1
        except HotswapError:
            codes["undecodable reply"] += 1
    sock.close()
    return codes


def mutate(rng: random.Random, good: bytes) -> bytes:
    kind = rng.randrange(7)
    data = bytearray(good)
    if kind == 0:
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:
        data = data[: rng.randrange(len(data))]
    elif kind == 2:
        at = rng.randrange(len(data))
        data[at:at] = rng.randbytes(rng.randrange(1, 40))
    elif kind == 3:
        data += b"\nx = " + b"[" * rng.randrange(100, 3000) + b"]" * 3000 + b"\n"
    elif kind == 4:
        data += b"\n[daemon.y]\nz = " + b"9" * rng.randrange(4000, 6000) + b"\n"
    elif kind == 5:
        data = bytearray(rng.randbytes(rng.randrange(0, 300)))
    else:
        data = data.replace(b'"v1"', json.dumps(random_value(rng)).encode(), 1)
    return bytes(data)


def phase_configs(endpoint: str, config: Path, count: int, rng: random.Random) -> Counter[str]:
    good = config.read_bytes()
    outcomes: Counter[str] = Counter()
    with Client(endpoint, timeout=30) as client:
        for _ in range(count):
            config.write_bytes(mutate(rng, good))
            try:
                client.reload_config()
                outcomes["applied"] += 1
            except HotswapError as exc:
                outcomes[exc.code] += 1
        config.write_bytes(good)
        client.reload_config()
        client.ping()
    return outcomes


def phase_states_in_process(count: int, rng: random.Random, workdir: Path, good_state: bytes) -> Counter[str]:
    from hotswapd import backends
    from hotswapd.config.schema import load_config
    from hotswapd.core.audit import AuditLog
    from hotswapd.core.health import HealthBook
    from hotswapd.core.registry import Registry
    from hotswapd.core.statefile import StateFile
    from hotswapd.core.switching import Switchboard

    backends.BUILTIN["fake"] = "tests.fakebackend"  # as the daemon process has it
    logging.getLogger("hotswapd").setLevel(logging.CRITICAL)  # each set-aside file logs an error: counted instead
    config = load_config(workdir / "config.toml")
    outcomes: Counter[str] = Counter()
    path = workdir / "inproc-state" / "state.json"
    path.parent.mkdir(exist_ok=True)
    for _ in range(count):
        path.write_bytes(mutate(rng, good_state))
        state = StateFile(path)
        try:
            saved = state.load()
            board = Switchboard(Registry(config), HealthBook(), AuditLog(path.parent / "audit.jsonl"), state, schedule=lambda work: None)
            board.adopt_config(config)
            board.restore(saved, config)
            outcomes["set aside" if state.set_aside else "restored"] += 1
            assert board.route("m").active in {"v1", "v2"}
        except Exception as exc:  # noqa: BLE001 -- what this phase counts
            outcomes[f"CRASH {type(exc).__name__}"] += 1
        for aside in path.parent.glob("state.json.corrupt-*"):
            aside.unlink()
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--configs", type=int, default=1000)
    parser.add_argument("--states", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    config = workdir / "config.toml"
    config.write_text(fake_config(workdir, {"v1": {}, "v2": {}}))
    endpoint = "ipc://" + str(short_socket_dir() / "d.sock")
    state_path = workdir / "state" / "hotswapd" / "state.json"
    deaths = 0

    process = start(workdir, config, endpoint)
    proc = psutil.Process(process.pid)
    rss0 = proc.memory_info().rss
    started = time.monotonic()
    codes = phase_frames(endpoint, args.frames, rng)
    rss1 = proc.memory_info().rss
    print(f"frames: {sum(codes.values())} replies in {time.monotonic() - started:.0f} s: " + ", ".join(f"{c} {n}" for c, n in codes.most_common()))
    print(f"        internal errors {codes.get('internal_error', 0)}; RSS {rss0 / MiB:.0f} -> {rss1 / MiB:.0f} MiB; alive: {process.poll() is None}")
    deaths += process.poll() is not None

    configs = phase_configs(endpoint, config, args.configs, rng)
    rss2 = proc.memory_info().rss
    print(f"configs: {args.configs} mutated files: " + ", ".join(f"{c} {n}" for c, n in configs.most_common()) + f"; RSS -> {rss2 / MiB:.0f} MiB; alive: {process.poll() is None}")
    deaths += process.poll() is not None
    with Client(endpoint, timeout=30) as client:
        client.switch("m", "v2")
    good_state = state_path.read_bytes()
    process.send_signal(signal.SIGTERM)
    process.wait(30)

    real = min(50, args.states)
    starts: Counter[str] = Counter()
    for _ in range(real):
        state_path.write_bytes(mutate(rng, good_state))
        try:
            process = start(workdir, config, endpoint)
            with Client(endpoint, timeout=30) as client:
                client.encode(["serving"])
            starts["started and served"] += 1
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        except Exception as exc:  # noqa: BLE001 -- what this phase counts
            starts[f"FAILED {type(exc).__name__}"] += 1
            deaths += 1
            if process.poll() is None:
                process.kill()
    in_process = phase_states_in_process(args.states - real, rng, workdir, good_state)
    print(f"states: {real} daemon starts on mutated state files: " + ", ".join(f"{c} {n}" for c, n in starts.items()) + "; " f"{args.states - real} through the loader: " + ", ".join(f"{c} {n}" for c, n in in_process.items()))

    state_path.write_bytes(good_state)
    kills: Counter[str] = Counter()
    for _ in range(args.kills):
        process = start(workdir, config, endpoint)
        stop = threading.Event()

        def flip(stop: threading.Event = stop) -> None:
            with Client(endpoint, timeout=5) as client:
                version = "v1"
                while not stop.is_set():
                    version = "v2" if version == "v1" else "v1"
                    try:
                        client.switch("m", version)
                    except HotswapError:
                        return

        flipper = threading.Thread(target=flip)
        flipper.start()
        time.sleep(rng.uniform(0.05, 0.5))
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        stop.set()
        flipper.join()
        try:
            active = json.loads(state_path.read_text())["models"]["m"]["active"]
            kills["state ok" if active in {"v1", "v2"} else f"state names {active!r}"] += 1
        except (OSError, ValueError, KeyError) as exc:
            kills[f"STATE CORRUPT {type(exc).__name__}"] += 1
        process = start(workdir, config, endpoint)
        with Client(endpoint, timeout=30) as client:
            served = client.encode(["after kill -9"]).version
            rejected = [e for e in client.history(all_events=True) if e["event"] == "state_rejected"]
        kills["served " + served] += 1
        kills["state rejected at restart"] += len(rejected) > 0
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    print(f"kills: {args.kills} x kill -9 mid-switch, restarted: " + ", ".join(f"{c} {n}" for c, n in sorted(kills.items())))
    print(f"deaths (a daemon that died or did not start when it should have): {deaths}")


if __name__ == "__main__":
    main()
