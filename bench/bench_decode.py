"""Decode every real ERC-20/ERC-721 Transfer log many times: evmflow's decoder vs eth-abi.

Run: ``python bench/bench_decode.py [--rounds N]``. Prints microseconds per log.
The eth-abi side does what a straightforward indexer would: ``eth_abi.decode`` of the data and
of each indexed topic, after ``bytes.fromhex``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import eth_abi  # noqa: E402
from eth_abi.exceptions import DecodingError  # noqa: E402

from evmflow.abi import AbiParam, EventAbi, load_abi_file  # noqa: E402
from evmflow.decode import EventDecoder  # noqa: E402

DATA = Path("/work/shared/data")


def transfer_logs(topic0: str) -> list[tuple[list[str], str]]:
    logs = []
    for path in sorted((DATA / "mainnet").glob("*.logs.jsonl.gz")):
        with gzip.open(path, "rt") as lines:
            for line in lines:
                raw = json.loads(line)
                if raw["topics"] and raw["topics"][0].lower() == topic0:
                    logs.append(([t.lower() for t in raw["topics"]], raw["data"].lower()))
    return logs


def eth_abi_decode(topics: list[str], data: str) -> tuple | None:
    if len(topics) != 3:
        return None
    try:
        sender = eth_abi.decode(["address"], bytes.fromhex(topics[1][2:]))[0]
        receiver = eth_abi.decode(["address"], bytes.fromhex(topics[2][2:]))[0]
        (value,) = eth_abi.decode(["uint256"], bytes.fromhex(data[2:]))
    except DecodingError:
        return None
    return sender, receiver, value


def per_log_us(decode, logs: list[tuple[list[str], str]], rounds: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(rounds):
            for topics, data in logs:
                decode(topics, data)
        best = min(best, time.perf_counter() - start)
    return best / (rounds * len(logs)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="passes over the logs (evmflow)")
    args = parser.parse_args()

    events = load_abi_file(DATA / "abis" / "ERC20.openzeppelin-4.9.6.json")
    transfer = next(e for e in events if e.name == "Transfer")
    decode = EventDecoder(transfer).decode
    logs = transfer_logs(transfer.topic0)
    erc20 = [log for log in logs if len(log[0]) == 3]

    print(f"{len(logs)} Transfer logs ({len(erc20)} ERC-20 shaped, the rest ERC-721: None)")
    for label, sample in (("ERC-20 only", erc20), ("all Transfers", logs)):
        ours = per_log_us(decode, sample, args.rounds)
        theirs = per_log_us(eth_abi_decode, sample, max(1, args.rounds // 20))
        print(
            f"{label:14} evmflow {ours:6.2f} us/log   eth-abi {theirs:6.1f} us/log   "
            f"x{theirs / ours:.0f}"
        )

    dynamic_event(args.rounds)


def dynamic_event(rounds: int) -> None:
    """A synthetic event with dynamic parts: where the generated helpers and loops run."""
    order = AbiParam(
        "order",
        "tuple",
        components=(AbiParam("maker", "address"), AbiParam("ids", "uint256[]")),
    )
    inputs = (AbiParam("who", "address", indexed=True), AbiParam("memo", "string"), order)
    event = EventAbi(name="Filled", inputs=inputs)
    types = ["string", order.canonical_type]
    values = ["gm, indexers", ("0x" + "12" * 20, list(range(10)))]
    who = "0x" + eth_abi.encode(["address"], ["0x" + "34" * 20]).hex()
    sample = [([event.topic0, who], "0x" + eth_abi.encode(types, values).hex())] * 1000

    def eth_abi_dynamic(topics: list[str], data: str) -> tuple:
        sender = eth_abi.decode(["address"], bytes.fromhex(topics[1][2:]))[0]
        return (sender, *eth_abi.decode(types, bytes.fromhex(data[2:])))

    ours = per_log_us(EventDecoder(event).decode, sample, rounds)
    theirs = per_log_us(eth_abi_dynamic, sample, max(1, rounds // 20))
    print(
        f"{'Filled(dyn.)':14} evmflow {ours:6.2f} us/log   eth-abi {theirs:6.1f} us/log   "
        f"x{theirs / ours:.0f}   (address, string, (address,uint256[10]))"
    )


if __name__ == "__main__":
    main()
