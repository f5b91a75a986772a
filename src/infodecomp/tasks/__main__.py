"""``python -m infodecomp.tasks --list [--json] [--kind beyond_normal|conditional|all]``."""

from __future__ import annotations

import argparse
import json
import sys

from infodecomp.tasks.vector import get_task, task_ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infodecomp.tasks", description="Ground-truth MI tasks.")
    parser.add_argument("--list", action="store_true", help="list task ids, dimensions and ground truth")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--kind", default="all", choices=("all", "beyond_normal", "conditional"))
    args = parser.parse_args(argv)
    if not args.list:
        parser.print_help()
        return 0
    rows = [get_task(t).to_dict() for t in task_ids(args.kind)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} tasks (nats)")
    for col in ("task id", "dim x", "dim y", "dim c", "MI", "CMI"):
        table.add_column(col, justify="left" if col == "task id" else "right")
    for r in rows:
        cmi = r.get("conditional_mutual_information")
        table.add_row(r["id"], str(r["dim_x"]), str(r["dim_y"]), str(r.get("dim_c", "")),
                      f"{r['mutual_information']:.4f}", "" if cmi is None else f"{cmi:.4f}")
    Console(width=120).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
