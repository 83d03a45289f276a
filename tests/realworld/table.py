"""The README's table of the real captures: each file, what its source says, what `probe analyze`
says. `python3 -m tests.realworld.table [--readme README.md]` prints it, or writes it between the
README's realworld-table markers."""

from __future__ import annotations

import argparse
import datetime
import re
import sys

from .corpus import judge_file, meets, truth

START, END = "<!-- realworld-table:start -->", "<!-- realworld-table:end -->"


def rows() -> list[list[str]]:
    result = []
    for name, expect in sorted(truth().items()):
        judged = judge_file(name)
        ok, summary = meets(expect, judged)
        said = summary
        for trace in judged.traces:
            if trace.result.interference:
                said += f"; box at hop {trace.result.hop}" + (f" ({trace.address})" if trace.address else "")
        source = f"{expect['expect']}: {expect.get('note', '')}"
        mark = {True: "yes", False: "**NO**", None: "not scored"}[ok]
        result.append([name, source[:110] + ("..." if len(source) > 110 else ""), said[:110], mark])
    return result


def table() -> str:
    from tabulate import tabulate

    body = rows()
    met = sum(row[3] == "yes" for row in body)
    scored = sum(row[3] != "not scored" for row in body)
    head = (f"_Made by `python3 -m tests.realworld.table --readme README.md` on {datetime.date.today()}: "
            f"{met} of {scored} scored files as their source says._\n\n")
    return head + tabulate(body, headers=["file", "the source says", "probe analyze says", "agrees"],
                           tablefmt="github")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readme", help="write the table into this file between its realworld-table markers")
    args = parser.parse_args()
    text = table()
    if not args.readme:
        print(text)
        return
    with open(args.readme) as handle:
        readme = handle.read()
    if START not in readme:
        sys.exit(f"{args.readme} has no {START} marker")
    readme = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _m: f"{START}\n{text}\n{END}", readme, flags=re.S)
    with open(args.readme, "w") as handle:
        handle.write(readme)


if __name__ == "__main__":
    main()
