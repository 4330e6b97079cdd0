"""``storage-core usage``: for every hotkey of the subnet, which backends hold its data (validator side)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from storage_core.cli.common import build_node, node_options, open_subtensor
from storage_core.cli.output import human_bytes, print_json, print_table


@click.command("usage")
@node_options
@click.option("--metrics-port", type=int, default=None,
              help="Serve Prometheus metrics on 127.0.0.1:PORT and keep surveying every --every.")
@click.option("--every", "every", type=float, default=600.0, show_default=True,
              help="Seconds between surveys while serving metrics.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def usage_command(netuid: int | None, network: str | None, chain_endpoint: str | None, mirror: Path | None,
                  wallet_name: str, wallet_hotkey: str, wallet_path: str | None, state_dir: Path | None,
                  metrics_port: int | None, every: float, as_json: bool) -> None:
    """Survey every registered hotkey: miners per backend (listing only), counts and shares; optional metrics."""
    from storage_core.chain.membership import read_membership
    from storage_core.telemetry import UsageMonitor

    node = build_node(netuid, network, chain_endpoint, mirror, wallet_name, wallet_hotkey, wallet_path, state_dir)
    monitor = UsageMonitor()
    server = monitor.metrics.serve(metrics_port) if metrics_port is not None else None
    try:
        while True:
            view = read_membership(open_subtensor(network, chain_endpoint), node.netuid)
            miners = sorted(view.registered - view.validators)
            found = monitor.survey(node.dispatcher(), miners)
            summary = monitor.report(miners)
            if as_json:
                print_json({
                    "netuid": node.netuid, "block": view.block, "miners": summary.miners,
                    "backends": [{"backend": u.backend, "miners_holding": u.miners_holding,
                                  "miners_expected": u.miners_expected, "share": round(u.share, 4)}
                                 for u in summary.backends],
                    "holders": {h: {b: {"objects": u.objects, "bytes": u.bytes} for b, u in usage.items()}
                                for h, usage in found.items()},
                })
            else:
                print_table(f"storage usage of subnet {node.netuid}: {summary.miners} miners",
                            ["backend", "miners holding data", "rollout expects", "share", "bytes"],
                            [[u.backend, u.miners_holding, u.miners_expected, f"{u.share:.0%}",
                              human_bytes(sum(f[u.backend].bytes for f in found.values() if u.backend in f))]
                             for u in summary.backends])
            if server is None:
                return
            time.sleep(every)
    except KeyboardInterrupt:
        pass
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
