"""A tiny explicit-state model checker, in the manner of TLC, for the Python transcriptions of
the specs in formal/: breadth-first search of every reachable state, invariants checked in every
state, action properties on every step, and leads-to properties under weak fairness."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

S = TypeVar("S", bound=Hashable)

Successors = Callable[[S], Iterable[tuple[str, S]]]
"""(action name, next state) for every step enabled in a state; stuttering steps included."""


@dataclass
class StateGraph(Generic[S]):
    initial: list[S]
    states: list[S]
    """Every reachable state, in breadth-first order (as TLC counts distinct states)."""
    edges: dict[S, list[tuple[str, S]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.states)


class ModelCheckFailure(AssertionError):
    """An invariant or an action property failed; the message carries the counterexample."""


def _path_to(parents: Mapping[S, tuple[S, str] | None], state: S) -> list[str]:
    path: list[str] = []
    current: S | None = state
    while current is not None:
        link = parents[current]
        path.append(repr(current) if link is None else f"--{link[1]}--> {current!r}")
        current = None if link is None else link[0]
    return list(reversed(path))


def explore(
    initial: Iterable[S],
    successors: Successors[S],
    invariants: Mapping[str, Callable[[S], bool]],
    action_properties: Mapping[str, Callable[[S, S], bool]] | None = None,
    *,
    max_states: int = 2_000_000,
) -> StateGraph[S]:
    """Explore every state reachable from `initial`. Raise ModelCheckFailure, with the path to
    the bad state, on the first invariant or action property that fails."""
    action_properties = action_properties or {}
    parents: dict[S, tuple[S, str] | None] = {}
    graph: StateGraph[S] = StateGraph(initial=[], states=[])
    queue: deque[S] = deque()

    def check_state(state: S) -> None:
        for name, invariant in invariants.items():
            if not invariant(state):
                trail = "\n  ".join(_path_to(parents, state))
                raise ModelCheckFailure(f"invariant {name} is violated:\n  {trail}")

    for state in initial:
        if state in parents:
            continue
        parents[state] = None
        graph.initial.append(state)
        graph.states.append(state)
        check_state(state)
        queue.append(state)
    while queue:
        state = queue.popleft()
        steps = list(successors(state))
        graph.edges[state] = steps
        for action, after in steps:
            for name, prop in action_properties.items():
                if not prop(state, after):
                    trail = "\n  ".join([*_path_to(parents, state), f"--{action}--> {after!r}"])
                    raise ModelCheckFailure(f"action property {name} is violated:\n  {trail}")
            if after in parents:
                continue
            parents[after] = (state, action)
            graph.states.append(after)
            if len(graph.states) > max_states:
                raise ModelCheckFailure(f"more than {max_states} states: is the model bounded?")
            check_state(after)
            queue.append(after)
    return graph


def check_leads_to(
    graph: StateGraph[S],
    p: Callable[[S], bool],
    q: Callable[[S], bool],
    fair_actions: Iterable[Iterable[str]],
) -> list[str]:
    """Problems with `p ~> q` under weak fairness of each action group in `fair_actions`.

    Sufficient check: the states a behaviour can visit after a p-state while q does not hold
    ("pending" states) form an acyclic graph (stuttering aside), and in each pending state some
    fair group has a step enabled. Then a fair behaviour cannot stay pending forever: it cannot
    loop, and it cannot stutter forever in a state where a fair action stays enabled.
    """
    groups = [frozenset(group) for group in fair_actions]
    pending: set[S] = set()
    frontier = [s for s in graph.states if p(s) and not q(s)]
    pending.update(frontier)
    while frontier:
        state = frontier.pop()
        for _, after in graph.edges[state]:
            if after != state and not q(after) and after not in pending:
                pending.add(after)
                frontier.append(after)
    problems: list[str] = []
    for state in pending:
        moves = {action for action, after in graph.edges[state] if after != state}
        if not any(moves & group for group in groups):
            problems.append(f"no fair action is enabled in pending state {state!r}")
    cycle = _find_cycle(pending, graph)
    if cycle is not None:
        problems.append("a fair behaviour can loop without reaching q: " + " -> ".join(cycle))
    return problems


def _find_cycle(nodes: set[S], graph: StateGraph[S]) -> list[str] | None:
    """A cycle (self-loops excluded) among `nodes`, as state reprs, or None."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(nodes, white)
    for root in nodes:
        if colour[root] != white:
            continue
        stack: list[tuple[S, list[S]]] = []
        colour[root] = grey
        stack.append((root, [a for _, a in graph.edges[root] if a in nodes and a != root]))
        trail = [root]
        while stack:
            node, children = stack[-1]
            if not children:
                colour[node] = black
                stack.pop()
                trail.pop()
                continue
            child = children.pop()
            if colour[child] == grey:
                start = trail.index(child)
                return [repr(s) for s in [*trail[start:], child]]
            if colour[child] == white:
                colour[child] = grey
                kids = [a for _, a in graph.edges[child] if a in nodes and a != child]
                stack.append((child, kids))
                trail.append(child)
    return None


def reachable(graph: StateGraph[S], start: S, goal: Callable[[S], bool]) -> bool:
    """Whether some path from `start` reaches a state where `goal` holds."""
    seen = {start}
    frontier = [start]
    while frontier:
        state = frontier.pop()
        if goal(state):
            return True
        for _, after in graph.edges[state]:
            if after not in seen:
                seen.add(after)
                frontier.append(after)
    return False
