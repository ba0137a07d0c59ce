//! Graph algorithms over step dependencies: topological levels, cycles, reachability.
//!
//! Graphs are given as `needs[i]` = the nodes node `i` depends on. All algorithms are
//! iterative (no recursion), so a 10,000-step chain cannot overflow the stack.

/// Groups nodes into levels: level 0 needs nothing, level n needs only nodes of lower levels
/// and at least one of level n-1. Nodes of one level may run in parallel. Returns `None` when
/// the graph has a cycle.
///
/// ```
/// use wayline_lang::graph::levels;
/// // 0 <- 1, 0 <- 2, (1, 2) <- 3
/// let needs = vec![vec![], vec![0], vec![0], vec![1, 2]];
/// assert_eq!(levels(&needs), Some(vec![vec![0], vec![1, 2], vec![3]]));
/// ```
pub fn levels(needs: &[Vec<usize>]) -> Option<Vec<Vec<usize>>> {
    let order = topological_order(needs)?;
    let mut level = vec![0usize; needs.len()];
    let mut out: Vec<Vec<usize>> = Vec::new();
    for node in order {
        let own = needs[node].iter().map(|&need| level[need] + 1).max().unwrap_or(0);
        level[node] = own;
        if out.len() <= own {
            out.resize_with(own + 1, Vec::new);
        }
        out[own].push(node);
    }
    for nodes in &mut out {
        nodes.sort_unstable();
    }
    Some(out)
}

/// A topological order (Kahn's algorithm, smallest index first among the ready nodes, so the
/// order is stable and follows the file where it can). `None` when there is a cycle.
pub fn topological_order(needs: &[Vec<usize>]) -> Option<Vec<usize>> {
    let n = needs.len();
    let dependents = dependents(needs);
    let mut missing: Vec<usize> = needs.iter().map(Vec::len).collect();
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> =
        (0..n).filter(|&i| missing[i] == 0).map(std::cmp::Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(std::cmp::Reverse(node)) = ready.pop() {
        order.push(node);
        for &dependent in &dependents[node] {
            missing[dependent] -= 1;
            if missing[dependent] == 0 {
                ready.push(std::cmp::Reverse(dependent));
            }
        }
    }
    (order.len() == n).then_some(order)
}

/// The reverse edges: for each node, the nodes that need it.
pub fn dependents(needs: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); needs.len()];
    for (node, list) in needs.iter().enumerate() {
        for &need in list {
            out[need].push(node);
        }
    }
    out
}

/// Every cycle, one per strongly connected component with more than one node (or a node that
/// needs itself). Each cycle is listed in dependency direction and closed: `[a, b, c, a]`
/// means a needs b, b needs c, c needs a.
///
/// ```
/// use wayline_lang::graph::cycles;
/// let needs = vec![vec![2], vec![0], vec![1], vec![]];
/// assert_eq!(cycles(&needs), vec![vec![0, 2, 1, 0]]);
/// ```
pub fn cycles(needs: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let components = strongly_connected(needs);
    let mut out = Vec::new();
    let mut component_of = vec![usize::MAX; needs.len()];
    for (index, component) in components.iter().enumerate() {
        for &node in component {
            component_of[node] = index;
        }
    }
    for (index, component) in components.iter().enumerate() {
        let start = *component.iter().min().unwrap_or(&0);
        let cyclic = component.len() > 1 || needs[start].contains(&start);
        if !cyclic {
            continue;
        }
        out.push(cycle_through(needs, start, |node| component_of[node] == index));
    }
    out.sort();
    out
}

/// A shortest cycle from `start` back to itself, staying inside the component (BFS).
fn cycle_through(needs: &[Vec<usize>], start: usize, inside: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut parent = std::collections::HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        let mut next: Vec<usize> = needs[node].iter().copied().filter(|&n| inside(n)).collect();
        next.sort_unstable();
        for need in next {
            if need == start {
                let mut path = vec![start];
                let mut at = node;
                while at != start {
                    path.push(at);
                    at = parent[&at];
                }
                path.push(start);
                // `path` is start <- … <- node <- start reversed; put it in needs order.
                let last = path.len() - 1;
                path[1..last].reverse();
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(entry) = parent.entry(need) {
                entry.insert(node);
                queue.push_back(need);
            }
        }
    }
    vec![start, start]
}

/// Tarjan's algorithm, iteratively.
pub fn strongly_connected(needs: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    let n = needs.len();
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut components = Vec::new();
    let mut counter = 0;
    for root in 0..n {
        if index[root] != UNSEEN {
            continue;
        }
        // (node, next edge to look at)
        let mut work = vec![(root, 0usize)];
        while let Some(&mut (node, ref mut edge)) = work.last_mut() {
            if *edge == 0 && index[node] == UNSEEN {
                index[node] = counter;
                low[node] = counter;
                counter += 1;
                stack.push(node);
                on_stack[node] = true;
            }
            if let Some(&next) = needs[node].get(*edge) {
                *edge += 1;
                if index[next] == UNSEEN {
                    work.push((next, 0));
                } else if on_stack[next] {
                    low[node] = low[node].min(index[next]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[node]);
            }
            if low[node] == index[node] {
                let mut component = Vec::new();
                while let Some(member) = stack.pop() {
                    on_stack[member] = false;
                    component.push(member);
                    if member == node {
                        break;
                    }
                }
                component.sort_unstable();
                components.push(component);
            }
        }
    }
    components
}

/// Answers "is `a` upstream of `b`" (does `b` transitively need `a`) for an acyclic graph,
/// using the topological positions to cut the search short.
pub struct Reachability<'a> {
    needs: &'a [Vec<usize>],
    position: Vec<usize>,
    seen: Vec<u32>,
    epoch: u32,
    stack: Vec<usize>,
}

impl<'a> Reachability<'a> {
    /// `order` must be a topological order of `needs`.
    pub fn new(needs: &'a [Vec<usize>], order: &[usize]) -> Reachability<'a> {
        let mut position = vec![0; needs.len()];
        for (at, &node) in order.iter().enumerate() {
            position[node] = at;
        }
        Reachability { needs, position, seen: vec![0; needs.len()], epoch: 0, stack: Vec::new() }
    }

    /// Whether `to` transitively needs `from`.
    pub fn is_upstream(&mut self, from: usize, to: usize) -> bool {
        if from == to || self.position[from] >= self.position[to] {
            return false;
        }
        self.epoch += 1;
        self.stack.clear();
        self.stack.push(to);
        while let Some(node) = self.stack.pop() {
            for &need in &self.needs[node] {
                if need == from {
                    return true;
                }
                if self.seen[need] != self.epoch && self.position[need] > self.position[from] {
                    self.seen[need] = self.epoch;
                    self.stack.push(need);
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Random graphs: `n` nodes, edges as (from, to) pairs; `acyclic` keeps only edges to
    /// lower indices.
    fn graph(max: usize, acyclic: bool) -> impl Strategy<Value = Vec<Vec<usize>>> {
        (1..max).prop_flat_map(move |n| {
            proptest::collection::vec((0..n, 0..n), 0..n * 3).prop_map(move |edges| {
                let mut needs = vec![Vec::new(); n];
                for (a, b) in edges {
                    if acyclic && a <= b {
                        continue;
                    }
                    if !needs[a].contains(&b) {
                        needs[a].push(b);
                    }
                }
                needs
            })
        })
    }

    /// Reference answer: does a cycle exist? (repeatedly drop nodes with no remaining needs)
    fn has_cycle_slow(needs: &[Vec<usize>]) -> bool {
        let mut alive = vec![true; needs.len()];
        loop {
            let removable: Vec<usize> = (0..needs.len())
                .filter(|&i| alive[i] && needs[i].iter().all(|&d| !alive[d]))
                .collect();
            if removable.is_empty() {
                return alive.iter().any(|&a| a);
            }
            for i in removable {
                alive[i] = false;
            }
        }
    }

    proptest! {
        #[test]
        fn levels_respect_every_edge(needs in graph(60, true)) {
            let levels = levels(&needs).expect("acyclic");
            let mut level_of = vec![usize::MAX; needs.len()];
            for (level, nodes) in levels.iter().enumerate() {
                for &node in nodes {
                    prop_assert_eq!(level_of[node], usize::MAX, "node listed twice");
                    level_of[node] = level;
                }
            }
            for (node, list) in needs.iter().enumerate() {
                prop_assert!(level_of[node] != usize::MAX);
                for &need in list {
                    prop_assert!(level_of[need] < level_of[node]);
                }
                // As early as possible: a node of level n > 0 has a need at level n - 1.
                if level_of[node] > 0 {
                    prop_assert!(list.iter().any(|&need| level_of[need] + 1 == level_of[node]));
                }
            }
        }

        #[test]
        fn cycles_are_found_exactly_when_they_exist(needs in graph(30, false)) {
            let found = cycles(&needs);
            prop_assert_eq!(!found.is_empty(), has_cycle_slow(&needs));
            prop_assert_eq!(levels(&needs).is_none(), has_cycle_slow(&needs));
            for cycle in found {
                prop_assert!(cycle.len() >= 2);
                prop_assert_eq!(cycle.first(), cycle.last());
                for pair in cycle.windows(2) {
                    prop_assert!(needs[pair[0]].contains(&pair[1]), "{:?} is not an edge", pair);
                }
            }
        }

        #[test]
        fn reachability_matches_a_plain_search(needs in graph(40, true)) {
            let order = topological_order(&needs).expect("acyclic");
            let mut reach = Reachability::new(&needs, &order);
            for to in 0..needs.len() {
                let mut seen = vec![false; needs.len()];
                let mut stack = needs[to].clone();
                while let Some(node) = stack.pop() {
                    if !seen[node] {
                        seen[node] = true;
                        stack.extend(&needs[node]);
                    }
                }
                for (from, &upstream) in seen.iter().enumerate() {
                    prop_assert_eq!(reach.is_upstream(from, to), upstream, "{} -> {}", from, to);
                }
            }
        }
    }

    #[test]
    fn a_long_chain_does_not_overflow() {
        let needs: Vec<Vec<usize>> =
            (0..100_000).map(|i| if i == 0 { vec![] } else { vec![i - 1] }).collect();
        assert_eq!(levels(&needs).unwrap().len(), 100_000);
        let mut cyclic = needs.clone();
        cyclic[0].push(99_999);
        assert_eq!(cycles(&cyclic)[0].len(), 100_001);
    }
}
