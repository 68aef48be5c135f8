"""The fleet's command line (`make fleet`): the scenarios asked for, then the summary table.

python3 -m tools.fleet                      # every scenario, then the summary table
python3 -m tools.fleet --only rolling idle   # some of them (names: see scenarios.SCENARIOS)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tools import fleet

from .balancers import NGINX_FOLLOWS
from .report import table
from .scenarios import BALANCERS, SCENARIOS, run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m tools.fleet", description=fleet.__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    p.add_argument("--rate", type=float, default=200, help="requests/s of each client group (default 200)")
    p.add_argument(
        "--balancers",
        nargs="+",
        choices=BALANCERS,
        default=list(BALANCERS),
        help="the balancers of the rolling restart (default all three, at once)",
    )
    p.add_argument(
        "--nginx-follows",
        choices=NGINX_FOLLOWS,
        default="slots",
        help="how nginx follows the rolling restart's endpoints: slots declared up front, "
        "no reload (default), or a reload at each change",
    )
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = p.parse_args(argv)
    started = time.monotonic()
    rows = run(args.only, args.rate, args.balancers, nginx_follows=args.nginx_follows)
    print(table(rows))
    print(f"\n{time.monotonic() - started:.0f} s in all; `make fleet` (python3 -m tools.fleet)")
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
