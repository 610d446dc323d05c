"""Symbolic solvers that write demonstrations in the trace format of docs/apr-format.md.

Both solvers run the same beam-pruned best-first search over Countdown states, ordered by
:func:`~spawnjoin.tasks.countdown._arith.factor_heuristic`:

* pop up to ``beam_size`` nodes from the open set; for each, write its ``Current State``, generate every
  successor, keep the ``beam_size`` best, shuffle them and write one ``Exploring Operation`` line each (plus
  ``Goal Reached``, ``No Solution`` or ``Generated Node``);
* **SoS+** then, with probability ``sub_search_prob``, searches each generated node depth-first in a serialized
  sub-search (``Start Sub Search at level L: ...`` ... ``Exit Sub Search at level L``), else pushes them;
* **APR**, in a thread that may spawn (level 0 by default) and with more than one generated node, with probability
  ``spawn_prob`` spawns one child thread per generated node and ends its call; the children search with
  ``sub_call_beam_size`` and the parent continues after the join.

Nodes are small slotted objects linked to their parent; the heuristic is updated incrementally and operation
strings are formatted only for the successors that survive pruning, which keeps the solver fast.
"""

from __future__ import annotations

import heapq
import random
from itertools import combinations, permutations
from typing import Literal

from ._arith import factor_distance_table
from .format import (
    JOIN_CLOSE,
    JOIN_OPEN,
    NO_SOLUTION,
    SUB_SEARCH_FAILED,
    budget_prefix,
    join_entry,
    spawn_block,
)
from .problems import Problem
from .trace import Call, ThreadDemo, TraceTree

FinalPath = Literal["root", "node"]
"""What a thread writes after its goal line: the path from its start node, or only the goal's last node."""

# For a state of n numbers: (i, j, indices of the other numbers) for every pair i < j.
_PAIRS = {n: [(i, j, tuple(k for k in range(n) if k not in (i, j))) for i, j in combinations(range(n), 2)]
          for n in range(2, 12)}  # slots (4 per pair) must fit in 8 bits: at most 11 numbers


# Every permutation of range(n) for short lists, so a shuffle costs one random draw.
_PERMS: list[list[tuple[int, ...]]] = [[()], [(0,)], *[list(permutations(range(n))) for n in range(2, 7)]]


class _Node:
    __slots__ = ("_ops_s", "h", "idx", "nums", "nums_s", "op", "parent")

    def __init__(self, nums: tuple[int, ...], h: int, op: str, parent: _Node | None) -> None:
        self.nums = nums
        self.nums_s = "[" + ", ".join(map(str, nums)) + "]"
        self.h = h
        self.op = op
        self.parent = parent
        self.idx = "0"
        self._ops_s: str | None = None if parent is not None else "[]"

    def ops_s(self) -> str:
        """Repr of the operations from the root, built from the parent's (computed only when written)."""
        if self._ops_s is None:
            up = self.parent.ops_s()  # type: ignore[union-attr]
            self._ops_s = f"['{self.op}']" if up == "[]" else f"{up[:-1]}, '{self.op}']"
        return self._ops_s

    @property
    def ops(self) -> list[str]:
        chain = []
        node: _Node | None = self
        while node is not None and node.parent is not None:
            chain.append(node.op)
            node = node.parent
        return chain[::-1]


class _Search:
    """State shared by one solver run: target, heuristic table, randomness."""

    def __init__(self, problem: Problem, rng: random.Random, final_path: FinalPath = "root") -> None:
        if final_path not in ("root", "node"):
            raise ValueError(f"final_path must be 'root' or 'node', not {final_path!r}")
        self.target = problem.target
        self.table = factor_distance_table(problem.target)
        self.rng = rng
        self.final_path = final_path
        nums = tuple(problem.numbers)
        self.root = _Node(nums, self.dist_sum(nums), "", None)

    def dist_sum(self, nums: tuple[int, ...]) -> int:
        table, t = self.table, self.target
        return sum(table[n] if n <= t else n - t for n in nums)

    def expand(self, node: _Node, beam: int) -> list[_Node]:
        """The ``beam`` best successors of ``node`` (stable on ties), shuffled."""
        table, t, nums = self.table, self.target, node.nums
        pairs = _PAIRS.get(len(nums), ())
        # Candidates are ints (h << 8 | slot), slot = 4 * pair + operator, so sorting them is sorting by h with
        # ties in generation order; only the kept ones get their operation string and numbers built.
        keys = []
        results = {}
        slot = 0
        for i, j, _ in pairs:
            a, b = nums[i], nums[j]
            base = node.h - (table[a] if a <= t else a - t) - (table[b] if b <= t else b - t)
            r = a + b
            results[slot] = r
            keys.append(((base + (table[r] if r <= t else r - t)) << 8) | slot)
            r = a * b
            results[slot + 1] = r
            keys.append(((base + (table[r] if r <= t else r - t)) << 8) | (slot + 1))
            r = a - b if a >= b else b - a
            results[slot + 2] = r
            keys.append(((base + (table[r] if r <= t else r - t)) << 8) | (slot + 2))
            if a >= b:
                if b and a % b == 0:
                    r = a // b
                    results[slot + 3] = r
                    keys.append(((base + (table[r] if r <= t else r - t)) << 8) | (slot + 3))
            elif a and b % a == 0:
                r = b // a
                results[slot + 3] = r
                keys.append(((base + (table[r] if r <= t else r - t)) << 8) | (slot + 3))
            slot += 4
        keys.sort()
        kept = []
        for key in keys[:beam]:
            sl = key & 255
            i, j, rest = pairs[sl >> 2]
            a, b = nums[i], nums[j]
            r = results[sl]
            code = sl & 3
            if code == 0:
                op = f"{a}+{b}={r}"
            elif code == 1:
                op = f"{a}*{b}={r}"
            else:
                if a < b:
                    a, b = b, a
                op = f"{a}-{b}={r}" if code == 2 else f"{a}/{b}={r}"
            kept.append(_Node((*[nums[k] for k in rest], r), key >> 8, op, node))
        self.shuffle(kept)
        return kept

    def shuffle(self, items: list) -> None:
        """Shuffle in place with one random draw (``random.shuffle`` makes one per element, which dominates here).

        Short lists take a uniformly drawn permutation from a table; longer ones run Fisher-Yates on the digits
        of one wide random integer.
        """
        n = len(items)
        if n < 2:
            return
        if n < len(_PERMS):
            perms = _PERMS[n]
            perm = perms[self.rng.getrandbits(48) % len(perms)]
            items[:] = [items[i] for i in perm]
            return
        x = self.rng.getrandbits(64 + n * n.bit_length())
        for k in range(n - 1, 0, -1):
            x, m = divmod(x, k + 1)
            items[k], items[m] = items[m], items[k]

    def explore_last(self, node: _Node, beam: int, out: list[str]) -> _Node | None:
        """:meth:`explore` for a two-number node, whose successors are all final: no node objects but the goal."""
        table, t = self.table, self.target
        a, b = node.nums
        big, small = (a, b) if a >= b else (b, a)
        r0, r1, r2 = a + b, a * b, big - small
        # (heuristic, operator code, result): the code breaks ties in generation order
        cands = [
            (table[r0] if r0 <= t else r0 - t, 0, r0),
            (table[r1] if r1 <= t else r1 - t, 1, r1),
            (table[r2] if r2 <= t else r2 - t, 2, r2),
        ]
        if small and big % small == 0:
            r3 = big // small
            cands.append((table[r3] if r3 <= t else r3 - t, 3, r3))
        cands.sort()
        del cands[beam:]
        perms = _PERMS[len(cands)]  # shuffle: visit the kept candidates in a random order (one draw)
        for k in perms[self.rng.getrandbits(48) % len(perms)]:
            _, code, r = cands[k]
            if code == 0:
                op = f"{a}+{b}={r}"
            elif code == 1:
                op = f"{a}*{b}={r}"
            else:
                op = f"{big}-{small}={r}" if code == 2 else f"{big}/{small}={r}"
            out.append(f"Exploring Operation: {op}, Resulting Numbers: [{r}]\n")
            if r == t:
                return _Node((r,), 0, op, node)
            out.append(f"{r},{t} unequal: No Solution\n")
        return None

    def state_line(self, node: _Node) -> str:
        return f"Current State: {self.target}:{node.nums_s}, Operations: {node.ops_s()}\n"

    def explore(self, node: _Node, beam: int, out: list[str]) -> tuple[_Node | None, list[_Node]]:
        """Write the expansion of ``node``; return the goal node if one was generated, and the new nodes."""
        if len(node.nums) == 2:
            return self.explore_last(node, beam, out), []
        t = self.target
        generated: list[_Node] = []
        for kid in self.expand(node, beam):
            out.append(f"Exploring Operation: {kid.op}, Resulting Numbers: {kid.nums_s}\n")
            if len(kid.nums) == 1:
                if kid.nums[0] == t:
                    return kid, generated
                out.append(f"{kid.nums[0]},{t} unequal: No Solution\n")
            else:
                kid.idx = f"{node.idx},{len(generated)}"
                out.append(f"Generated Node #{kid.idx}: {t}:{kid.nums_s} Operation: {kid.op}\n")
                generated.append(kid)
        generated.sort(key=_by_h)
        return None, generated

    def final(self, goal: _Node, start: _Node) -> str:
        """The solution path a thread writes after its goal line: from ``start``, or only the goal's last node."""
        if self.final_path == "node" and goal.parent is not None:
            return self.path(goal, goal.parent)
        return self.path(goal, start)

    def path(self, goal: _Node, start: _Node) -> str:
        """The path from ``start`` to ``goal``, ending with the ``Goal Reached`` line."""
        chain = [goal]
        while chain[-1] is not start:
            parent = chain[-1].parent
            if parent is None:
                raise ValueError("goal does not descend from start")
            chain.append(parent)
        chain.reverse()
        t = self.target
        parts = []
        last = len(chain) - 1
        for k in range(last):
            a, b = chain[k], chain[k + 1]
            parts.append(f"Moving to Node #{a.idx}\n{self.state_line(a)}")
            parts.append(f"Exploring Operation: {b.op}, Resulting Numbers: {b.nums_s}\n")
            if k + 1 < last:
                parts.append(f"Generated Node #{b.idx}: {t}:{b.nums_s} Operation: {b.op}\n")
        parts.append(f"{goal.nums[0]},{t} equal: Goal Reached\n")
        return "".join(parts)


def _by_h(node: _Node) -> int:
    return node.h


def _by_index(node: _Node) -> int:
    return int(node.idx.rpartition(",")[2])


def _rng(rng: random.Random | None, seed: int | None) -> random.Random:
    return rng if rng is not None else random.Random(seed)


# ---------------------------------------------------------------------------------------------------- SoS+


def _sos(s: _Search, start: _Node, beam: int, prob: float, level: int, out: list[str]) -> bool:
    heap = [(start.h, 0, start)]
    seq = 1
    while heap:
        batch = [heapq.heappop(heap)[2] for _ in range(min(beam, len(heap)))]
        for k, node in enumerate(batch):
            out.append(s.state_line(node))
            goal, generated = s.explore(node, beam, out)
            if goal is not None:
                out.append(f"{goal.nums[0]},{s.target} equal: Goal Reached\n")
                out.append(s.final(goal, s.root))
                return True
            if generated and s.rng.random() < prob:
                for kid in generated:
                    out.append(f"Start Sub Search at level {level + 1}: Moving to Node #{kid.idx}\n")
                    found = _sos(s, kid, beam, prob, level + 1, out)
                    out.append(f"Exit Sub Search at level {level + 1}\n")
                    if found:
                        return True
                    out.append(SUB_SEARCH_FAILED)
            else:
                for kid in generated:
                    heapq.heappush(heap, (kid.h, seq, kid))
                    seq += 1
            if k + 1 < len(batch):
                out.append(f"Moving to Node #{batch[k + 1].idx}\n")
        if heap:
            out.append(f"Moving to Node #{heap[0][2].idx}\n")
    out.append(NO_SOLUTION)
    return False


def sos_plus(
    problem: Problem,
    *,
    beam_size: int = 3,
    sub_search_prob: float = 0.5,
    token_budget: int | None = None,
    final_path: FinalPath = "root",
    rng: random.Random | None = None,
    seed: int | None = None,
) -> TraceTree:
    """Serialized search (the SoS+ baseline): one thread, one call.

    Args:
        problem (Problem): The problem.
        beam_size (int): Nodes popped per step and successors kept per node. Defaults to 3.
        sub_search_prob (float): Probability of a depth-first sub-search on a node's children. Defaults to 0.5.
        token_budget (int | None): Optional ``Token Budget: B `` prefix on the prompt.
        final_path (str): What follows the goal line: ``"root"`` rewrites the path from ``Node #0`` (the
            reference format), ``"node"`` only the goal's last node, whose ``Operations`` list holds the path
            (docs/apr-format.md). Defaults to ``"root"``.
        rng (random.Random | None): Randomness; wins over ``seed``.
        seed (int | None): Seed for a fresh generator when ``rng`` is not given.

    Returns:
        TraceTree: A ``style="sos"`` tree whose root has a single call.
    """
    s = _Search(problem, _rng(rng, seed), final_path)
    out: list[str] = []
    solved = _sos(s, s.root, beam_size, sub_search_prob, 0, out)
    first = out[0]  # the root's Current State line belongs to the prompt
    prompt = budget_prefix(token_budget=token_budget) + "Moving to Node #0\n" + first
    call = Call.model_construct(context=prompt, target="".join(out[1:]))
    root = ThreadDemo.model_construct(
        thread_path="root", start_node="0", level=0, calls=[call], children=[], spawned_at=None, solved=solved
    )
    return TraceTree.model_construct(
        problem=problem, style="sos", beam_size=beam_size, sub_call_beam_size=None, spawn_prob=None,
        root=root, solved=solved,
    )


# ---------------------------------------------------------------------------------------------------- APR


class _AprConfig:
    __slots__ = ("beam", "by_heuristic", "prob", "spawn_levels", "sub_beam")

    def __init__(self, beam: int, sub_beam: int, prob: float, spawn_levels: int, by_heuristic: bool) -> None:
        self.beam, self.sub_beam, self.prob, self.spawn_levels = beam, sub_beam, prob, spawn_levels
        self.by_heuristic = by_heuristic


def _apr_thread(
    s: _Search, cfg: _AprConfig, start: _Node, level: int, thread_path: str, spawned_at: int | None
) -> tuple[ThreadDemo, _Node | None]:
    t = s.target
    beam = cfg.beam if level == 0 else cfg.sub_beam
    history = f"Moving to Node #{start.idx}\n{s.state_line(start)}"  # the prompt
    out: list[str] = []
    calls: list[Call] = []
    children: list[ThreadDemo] = []
    goal: _Node | None = None
    heap = [(start.h, 0, start)]
    seq = 1
    first = True
    while heap and goal is None:
        batch = [heapq.heappop(heap)[2] for _ in range(min(beam, len(heap)))]
        for k, node in enumerate(batch):
            if not first:
                out.append(s.state_line(node))
            first = False
            if len(node.nums) == 2:  # the common case in children: every successor is final
                goal = s.explore_last(node, beam, out)
                if goal is not None:
                    out.append(f"{t},{t} equal: Goal Reached\n")
                    out.append(s.final(goal, start))
                    break
                if k + 1 < len(batch):
                    out.append(f"Moving to Node #{batch[k + 1].idx}\n")
                continue
            goal, generated = s.explore(node, beam, out)
            if goal is not None:
                out.append(f"{t},{t} equal: Goal Reached\n")
                out.append(s.final(goal, start))
                break
            if level < cfg.spawn_levels and len(generated) > 1 and s.rng.random() < cfg.prob:
                if not cfg.by_heuristic:  # spawn in the order the nodes were generated: #0,0, #0,1, ...
                    generated.sort(key=_by_index)
                results = []
                for kid in generated:
                    child, child_goal = _apr_thread(
                        s, cfg, kid, level + 1, f"{thread_path}.{len(children)}", len(calls)
                    )
                    children.append(child)
                    results.append(child_goal)
                gen = "".join(out)
                calls.append(Call.model_construct(
                    context=history, target=gen + spawn_block([g.idx for g in generated], level=level + 1)
                ))
                joins = [
                    join_entry(i, kid.idx, None if g is None else s.final(g, kid), level=level + 1)
                    for i, (kid, g) in enumerate(zip(generated, results, strict=True))
                ]
                history = history + gen + JOIN_OPEN + "".join(joins) + JOIN_CLOSE
                out = []
                goal = next((g for g in results if g is not None), None)
                if goal is not None:
                    out.append(f"{t},{t} equal: Goal Reached\n")
                    out.append(s.final(goal, start))
                    break
            else:
                for kid in generated:
                    heapq.heappush(heap, (kid.h, seq, kid))
                    seq += 1
            if k + 1 < len(batch):
                out.append(f"Moving to Node #{batch[k + 1].idx}\n")
        else:
            if heap:
                out.append(f"Moving to Node #{heap[0][2].idx}\n")
    if goal is None:
        out.append(NO_SOLUTION)
    calls.append(Call.model_construct(context=history, target="".join(out)))
    thread = ThreadDemo.model_construct(
        thread_path=thread_path, start_node=start.idx, level=level, calls=calls, children=children,
        spawned_at=spawned_at, solved=goal is not None,
    )
    return thread, goal


def apr(
    problem: Problem,
    *,
    beam_size: int = 3,
    sub_call_beam_size: int | None = None,
    spawn_prob: float = 0.9,
    spawn_levels: int = 1,
    spawn_order: Literal["heuristic", "generated"] = "heuristic",
    sub_call_budget: bool = False,
    final_path: FinalPath = "root",
    rng: random.Random | None = None,
    seed: int | None = None,
) -> TraceTree:
    """Adaptive parallel search: a root thread that spawns child threads and joins their paths.

    Args:
        problem (Problem): The problem.
        beam_size (int): Beam of the root thread. Defaults to 3.
        sub_call_beam_size (int | None): Beam of child threads. Defaults to ``beam_size``.
        spawn_prob (float): Probability that a spawning-level thread with more than one generated node spawns
            one child per node. Defaults to 0.9 (the released code).
        spawn_levels (int): Threads at levels below this may spawn; 1 (the reference) means only the root.
        spawn_order (str): Order of the sub searches in a spawn block (and so of the join entries):
            ``"heuristic"`` (best heuristic first, as the reference solver) or ``"generated"`` (``#0,0``,
            ``#0,1``, ... as the nodes were written, which a small model can copy without ranking them).
            Defaults to ``"heuristic"``.
        sub_call_budget (bool): Prefix the root prompt with ``Sub Call Budget: N `` (N = children in the tree).
        final_path (str): What a thread writes after its goal line, and so what a child returns on join:
            ``"root"`` rewrites the path from the thread's start node (the reference format), ``"node"`` only
            the goal's last node, whose ``Operations`` list holds the path from ``Node #0``, so that a parent
            after a join copies the winning entry's four lines. Defaults to ``"root"``.
        rng (random.Random | None): Randomness; wins over ``seed``.
        seed (int | None): Seed for a fresh generator when ``rng`` is not given.

    Returns:
        TraceTree: A ``style="apr"`` tree.
    """
    s = _Search(problem, _rng(rng, seed), final_path)
    sub_beam = sub_call_beam_size if sub_call_beam_size is not None else beam_size
    if spawn_order not in ("heuristic", "generated"):
        raise ValueError(f"spawn_order must be 'heuristic' or 'generated', not {spawn_order!r}")
    cfg = _AprConfig(beam_size, sub_beam, spawn_prob, spawn_levels, spawn_order == "heuristic")
    root, goal = _apr_thread(s, cfg, s.root, 0, "root", None)
    tree = TraceTree.model_construct(
        problem=problem, style="apr", beam_size=beam_size, sub_call_beam_size=sub_beam, spawn_prob=spawn_prob,
        root=root, solved=goal is not None,
    )
    if sub_call_budget:
        add_prompt_prefix(tree, budget_prefix(sub_call_budget=tree.num_children))
    return tree


def add_prompt_prefix(tree: TraceTree, prefix: str) -> TraceTree:
    """Prefix every root call's context with a conditioning prefix such as ``Token Budget: 1024 ``.

    Args:
        tree (TraceTree): A solver tree (modified in place).
        prefix (str): The prefix, usually from :func:`~spawnjoin.tasks.countdown.format.budget_prefix`.

    Returns:
        TraceTree: The same tree.
    """
    for call in tree.root.calls:
        call.context = prefix + call.context
    return tree
