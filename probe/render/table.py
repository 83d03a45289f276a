"""Tables as tabulate's "simple" format lays them out, in a fraction of its time.

`probe analyze` prints a table row per flow and a packet table per flow that is not clean: on a
capture of a million packets, 125,000 rows and thousands of packet tables. tabulate infers the
type of every cell with regular expressions and lays multi-line cells out line by line; it took
9.3 s for a 125,000-row flows table and 1.6 s for the 2,509-row packet table of one download, more
than the whole analysis. `simple_table` gives the same text: it asks tabulate's own functions
what type a cell is and how to format it, but stops inferring a column once it is text (the most
generic type), formats numbers it already knows as numbers, and pads with `str.ljust`/`rjust`.
It handles what these tables hold (ints and ASCII strings, one cell of many lines); anything else
(another type, non-ASCII text that may be wide, ANSI codes, carriage returns, no rows) goes to
tabulate itself. `tests/unit/test_layout.py` holds the two to the same output.
"""

from __future__ import annotations

MIN_PADDING = 2  # tabulate's: a column is at least as wide as its header and two spaces


def simple_table(rows: list[list], headers: list[str], style_row=None) -> str:
    """`tabulate(rows, headers=headers, tablefmt="simple")`, the same text; `style_row(i, line)`
    (colour, `probe.render.colour`) is given every line of row `i` once laid out, so that its escape
    codes never count in a width (on tabulate's own path, for rows it lays out, there is none)."""
    import tabulate as tab

    if not rows or not _plain(rows):
        return tab.tabulate(rows, headers=headers, tablefmt="simple")
    columns = list(zip(*rows))
    types = [_column_type(column, tab) for column in columns]
    multiline = any(isinstance(cell, str) and "\n" in cell for column in columns for cell in column)
    texts, widths, right = [], [], []
    for column, kind, header in zip(columns, types, headers):
        if kind is str:  # `_format`'s common cases, inline: a million-row table spends its time here
            cells = [cell if type(cell) is str else str(cell) for cell in column]
        elif kind is int and all(type(cell) is int for cell in column):
            cells = [str(cell) for cell in column]
        else:
            cells = [_format(cell, kind, tab) for cell in column]
        numeric = kind is int or kind is float
        if numeric:
            decimals = [tab._afterpoint(cell) for cell in cells] if kind is float else None
            if decimals:
                most = max(decimals)
                cells = [cell + (most - places) * " " for cell, places in zip(cells, decimals)]
        else:
            cells = [cell.strip() for cell in cells]
        width = max(len(header) + MIN_PADDING,
                    max((max(map(len, cell.split("\n"))) if multiline else len(cell)) for cell in cells))
        texts.append(cells)
        widths.append(width)
        right.append(numeric)
    lines = ["  ".join(header.rjust(width) if at_right else header.ljust(width)
                       for header, width, at_right in zip(headers, widths, right)).rstrip(),
             "  ".join("-" * width for width in widths)]
    style = style_row or _unstyled
    if not multiline:  # str.format pads as ljust/rjust do
        layout = "  ".join(("{:>%d}" if at_right else "{:<%d}") % width for width, at_right in zip(widths, right))
        if style_row is None:
            lines.extend(layout.format(*row).rstrip() for row in zip(*texts))
        else:
            lines.extend(style(i, layout.format(*row).rstrip()) for i, row in enumerate(zip(*texts)))
        return "\n".join(lines)
    for i, row in enumerate(zip(*texts)):
        cells_lines = [cell.splitlines() for cell in row]
        height = max(map(len, cells_lines))
        for n in range(height):
            lines.append(style(i, "  ".join((cell_lines[n].rjust(width) if at_right else cell_lines[n].ljust(width))
                                            if n < len(cell_lines) else " " * width
                                            for cell_lines, width, at_right in zip(cells_lines, widths, right))
                               .rstrip()))
    return "\n".join(lines)


def _unstyled(_row: int, line: str) -> str:
    return line


def _plain(rows: list[list]) -> bool:
    """Only what `simple_table` lays out as tabulate does: ints, and ASCII text without ANSI codes,
    tabs or carriage returns, in rows of one length."""
    width = len(rows[0])
    for row in rows:
        if len(row) != width:
            return False
        for cell in row:
            if type(cell) is int:
                continue
            if type(cell) is not str or not cell.isascii() or "\x1b" in cell or "\r" in cell or "\t" in cell:
                return False
    return True


def _column_type(column, tab) -> type:
    """tabulate's `_column_type`, stopping at text (nothing is more generic)."""
    kind = bool
    for cell in column:
        if type(cell) is int and kind is int:
            continue  # the common case, settled
        cell_type = int if type(cell) is int else tab._type(cell, False, True)
        kind = tab._more_generic(kind, cell_type)
        if kind is str:
            break
    return kind


def _format(cell, kind: type, tab) -> str:
    if kind is str or cell == "":
        return cell if type(cell) is str else str(cell)
    if kind is int and type(cell) is int:
        return str(cell)
    return tab._format(cell, kind, "g", "", "", False)
