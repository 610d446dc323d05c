"""`ThreadTreeView`: a rich renderable of one `ViewState` snapshot.

One line per thread, indented by spawn depth with tree guides, then a footer with the solve's totals::

    root                  waiting    120 tok  40.0 tok/s  …let me split the search
    ├── left half         done        64 tok  32.0 tok/s  …no solution on this side
    └── right half        running     18 tok  36.0 tok/s  …try 7 * 8 = 56, then
    threads 3 (1 running, 1 waiting) · tokens 202 · sequential 184 · elapsed 4.0s · cache reuse n/a

When `max_rows` limits the rows (a live view in a small terminal), active threads and their ancestors are
kept first, then failures, then the most recently finished; a line counts what was left out.
"""

from __future__ import annotations

from rich.cells import cell_len, get_character_cell_size
from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from spawnjoin.view.state import ThreadView, Totals, ViewState

__all__ = ["ThreadTreeView", "STATE_STYLES", "format_tokens", "format_rate", "format_seconds"]

STATE_STYLES: dict[str, str] = {
    "pending": "dim",
    "running": "yellow",
    "waiting": "blue",
    "done": "green",
    "failed": "bold red",
    "cancelled": "magenta",
}
"""Style of each thread state."""

# Which threads survive when rows are limited: lower ranks first.
_KEEP_RANK = {"running": 0, "waiting": 1, "pending": 2, "failed": 3, "cancelled": 4, "done": 5}
_GAP = "  "
_MIN_WORDS = 8


def format_tokens(tokens: int) -> str:
    """`1234` → `'1,234 tok'`."""
    return f"{tokens:,} tok"


def format_rate(rate: float | None) -> str:
    """Tokens per second with one decimal below 1,000 (`''` when unknown)."""
    if rate is None:
        return ""
    return f"{rate:,.0f} tok/s" if rate >= 1000 else f"{rate:.1f} tok/s"


def format_seconds(seconds: float) -> str:
    """`12.34` → `'12.3s'`, `125` → `'2m05s'`."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def _crop_end(text: str, width: int) -> str:
    """`text` cut to `width` cells, ending in an ellipsis when cut."""
    if cell_len(text) <= width:
        return text
    out, used = [], 0
    for char in text:
        size = get_character_cell_size(char)
        if used + size > width - 1:
            break
        out.append(char)
        used += size
    return "".join(out) + "…"


def _crop_start(text: str, width: int) -> str:
    """The last `width` cells of `text`, starting with an ellipsis when cut (keeps the latest words)."""
    if cell_len(text) <= width:
        return text
    out, used = [], 0
    for char in reversed(text):
        size = get_character_cell_size(char)
        if used + size > width - 1:
            break
        out.append(char)
        used += size
    kept = "".join(reversed(out))
    cut_word = len(kept) < len(text) and not text[-len(kept) - 1].isspace()
    if cut_word and " " in kept:
        kept = kept[kept.index(" ") :]  # start at a word boundary rather than mid-word
    return "…" + kept.lstrip()


def _select(state: ViewState, threads: list[ThreadView], limit: int) -> set[str]:
    """Ids of at most `limit` threads to show, closed under ancestors, most interesting first."""

    def key(t: ThreadView) -> tuple[int, float]:
        recent = t.finished_at if t.finished_at is not None else (t.started_at or 0.0)
        return (-1 if t.id == state.root_id else _KEEP_RANK.get(t.state, 6), -recent)

    chosen: set[str] = set()
    for thread in sorted(threads, key=key):
        chain: list[str] = []
        node: ThreadView | None = thread
        while node is not None and node.id not in chosen:
            chain.append(node.id)
            node = state.threads.get(node.parent_id) if node.parent_id is not None else None
        if len(chosen) + len(chain) <= limit:
            chosen.update(chain)
        if len(chosen) >= limit:
            break
    return chosen


def _prefixes(state: ViewState, rows: list[ThreadView]) -> list[str]:
    """Tree guides (`├── `, `│   `, ...) for `rows`, which are in walk order and closed under ancestors."""
    visible = {t.id for t in rows}
    last_child: dict[str, str] = {}
    for thread in rows:
        if thread.parent_id in visible:
            last_child[thread.parent_id] = thread.id  # type: ignore[index]
    out = []
    for thread in rows:
        parts: list[str] = []
        node = thread
        while node.parent_id in visible:
            parent = state.threads[node.parent_id]  # type: ignore[index]
            is_last = last_child.get(parent.id) == node.id
            if node is thread:
                parts.append("└── " if is_last else "├── ")
            else:
                parts.append("    " if is_last else "│   ")
            node = parent
        out.append("".join(reversed(parts)))
    return out


def _pack(parts: list[str], width: int, sep: str = " · ") -> list[str]:
    """Join `parts` with `sep` into as few lines of at most `width` cells as possible, never splitting one."""
    lines: list[str] = []
    for part in parts:
        if lines and cell_len(lines[-1]) + len(sep) + cell_len(part) <= width:
            lines[-1] += sep + part
        else:
            lines.append(part)
    return lines


class ThreadTreeView:
    """A renderable snapshot of a solve's thread tree with a totals footer.

    Args:
        state: The snapshot to draw (read, never changed).
        now: Time (on the events' clock) used for running threads' speed and the elapsed time.
            Defaults to the latest event's time.
        max_rows: Most thread lines to draw (None: all of them).
        footer: Whether to draw the totals footer. Defaults to True.
    """

    def __init__(
        self, state: ViewState, *, now: float | None = None, max_rows: int | None = None, footer: bool = True
    ) -> None:
        self.state = state
        self.now = now
        self.max_rows = max_rows
        self.footer = footer

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        lines = self.rows(width)
        if self.footer:
            lines.extend(self.footer_lines(width))
        yield from lines

    # -- rows ----------------------------------------------------------------------------------------

    def rows(self, width: int) -> list[Text]:
        """One line per shown thread (plus a line counting hidden threads), each fitting `width` cells."""
        state = self.state
        now = state.now if self.now is None else self.now
        threads = state.walk()
        hidden: list[ThreadView] = []
        if self.max_rows is not None and len(threads) > self.max_rows:
            keep = _select(state, threads, max(1, self.max_rows - 1))
            hidden = [t for t in threads if t.id not in keep]
            threads = [t for t in threads if t.id in keep]
        labels = [p + t.name for p, t in zip(_prefixes(state, threads), threads, strict=True)]
        tokens = [format_tokens(t.tokens) for t in threads]
        rates = [format_rate(t.tokens_per_second(now)) for t in threads]

        label_w = min(max(map(cell_len, labels), default=0), max(12, width * 2 // 5))
        state_w = max((len(t.state) for t in threads), default=0)
        tokens_w = max(map(len, tokens), default=0)
        rate_w = max(map(len, rates), default=0)
        used = label_w + len(_GAP) + state_w + len(_GAP) + tokens_w + (len(_GAP) + rate_w if rate_w else 0)
        words_w = width - used - len(_GAP)

        lines = []
        for thread, label, tok, rate in zip(threads, labels, tokens, rates, strict=True):
            line = Text(no_wrap=True, overflow="crop")
            label = _crop_end(label, label_w)
            line.append(label, style="bold" if thread.id == state.root_id else "")
            line.append(" " * (label_w - cell_len(label)) + _GAP)
            line.append(thread.state.ljust(state_w), style=STATE_STYLES.get(thread.state, ""))
            line.append(_GAP + tok.rjust(tokens_w))
            if rate_w:
                line.append(_GAP + rate.rjust(rate_w), style="dim")
            if words_w >= _MIN_WORDS:
                words, style = self._words(thread)
                if words:
                    line.append(_GAP)
                    line.append(_crop_start(words, words_w), style=style)
            line.rstrip()
            line.truncate(width)
            lines.append(line)
        if hidden:
            lines.append(Text(self._hidden_summary(hidden), style="dim", no_wrap=True, overflow="ellipsis"))
        return lines

    @staticmethod
    def _words(thread: ThreadView) -> tuple[str, str]:
        """The last column: why a thread ended early, else its latest words."""
        if thread.reason and not thread.active:
            return thread.reason, "red" if thread.state == "failed" else "italic"
        return " ".join(thread.tail.split()), "dim"

    @staticmethod
    def _hidden_summary(hidden: list[ThreadView]) -> str:
        counts: dict[str, int] = {}
        for thread in hidden:
            counts[thread.state] = counts.get(thread.state, 0) + 1
        parts = ", ".join(
            f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: _KEEP_RANK.get(kv[0], 6))
        )
        noun = "thread" if len(hidden) == 1 else "threads"
        return f"… {len(hidden)} more {noun} ({parts})"

    # -- footer --------------------------------------------------------------------------------------

    def footer_lines(self, width: int) -> list[Text]:
        """The totals (wrapped between items to fit `width`), plus the solve's outcome once it has finished."""
        totals = self.state.totals(self.now)
        lines = [
            Text(line, style="bold", no_wrap=True, overflow="ellipsis")
            for line in _pack(self._footer_parts(totals), width)
        ]
        if self.state.finished:
            outcome = Text("solve ", no_wrap=True, overflow="ellipsis")
            outcome.append(self.state.status, style=STATE_STYLES.get(self.state.status, "bold red"))
            if self.state.answer is not None:
                outcome.append(" · answer ")
                outcome.append(" ".join(self.state.answer.split()), style="bold")
            lines.append(outcome)
        return lines

    @staticmethod
    def _footer_parts(totals: Totals) -> list[str]:
        busy = [
            f"{n} {name}"
            for n, name in (
                (totals.running, "running"),
                (totals.waiting, "waiting"),
                (totals.failed, "failed"),
                (totals.cancelled, "cancelled"),
            )
            if n
        ]
        threads = f"threads {totals.threads}" + (f" ({', '.join(busy)})" if busy else "")
        if totals.cache_reuse is not None:
            cache = f"cache reuse {totals.cache_reuse:.0%} ({totals.cached_tokens:,} tok)"
        elif totals.cached_tokens is not None:
            cache = f"cache reuse {totals.cached_tokens:,} tok"
        else:
            cache = "cache reuse n/a"
        return [
            threads,
            f"tokens {totals.total_tokens:,} ({totals.sequential_tokens:,} sequential)",
            f"elapsed {format_seconds(totals.elapsed)}",
            cache,
        ]
