//! Dependency graph checks for `spec.after`.
//!
//! Edges point from a task to one of its predecessors (`task -> predecessor`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::types::Task;

/// A dependency cycle. `cycle` starts and ends with the same task, e.g.
/// `["a/x", "a/y", "a/x"]`: `a/x` runs after `a/y`, which runs after `a/x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleError {
    /// Task keys along the cycle; first == last.
    pub cycle: Vec<String>,
}

impl fmt::Display for CycleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dependency cycle: {}", self.cycle.join(" -> "))
    }
}

impl std::error::Error for CycleError {}

/// Fails with the first cycle found (deterministically: nodes are visited in
/// sorted order) if the graph given by `edges` (task -> predecessor) has one.
/// A self edge (`a/x -> a/x`) is a cycle.
pub fn check_acyclic<'a>(edges: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<(), CycleError> {
    let mut graph: BTreeMap<&'a str, BTreeSet<&'a str>> = BTreeMap::new();
    for (from, to) in edges {
        graph.entry(from).or_default().insert(to);
        graph.entry(to).or_default();
    }
    topo(&graph).map(|_| ())
}

/// Returns the nodes in dependency order (every predecessor before its
/// dependents), or the first cycle.
fn topo<'a>(graph: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Result<Vec<&'a str>, CycleError> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        New,
        OnStack,
        Done,
    }
    let mut state: BTreeMap<&str, State> = graph.keys().map(|k| (*k, State::New)).collect();
    let mut order = Vec::with_capacity(graph.len());
    for &root in graph.keys() {
        if state[root] != State::New {
            continue;
        }
        // Iterative DFS: stack of (node, iterator over its predecessors).
        let mut stack: Vec<(&str, std::collections::btree_set::Iter<'_, &str>)> = vec![(root, graph[root].iter())];
        state.insert(root, State::OnStack);
        while let Some((node, iter)) = stack.last_mut() {
            match iter.next() {
                Some(&next) => match state[next] {
                    State::New => {
                        state.insert(next, State::OnStack);
                        stack.push((next, graph[next].iter()));
                    }
                    State::OnStack => {
                        let start = stack.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[start..].iter().map(|(n, _)| n.to_string()).collect();
                        cycle.push(next.to_string());
                        return Err(CycleError { cycle });
                    }
                    State::Done => {}
                },
                None => {
                    let node = *node;
                    state.insert(node, State::Done);
                    order.push(node);
                    stack.pop();
                }
            }
        }
    }
    Ok(order)
}

fn task_edges(tasks: &[Task]) -> Vec<(String, String)> {
    tasks
        .iter()
        .flat_map(|t| {
            let key = t.key();
            t.spec.after.iter().map(move |d| (key.clone(), d.task.clone()))
        })
        .collect()
}

/// [`check_acyclic`] over the `spec.after` edges of `tasks`.
pub fn check_tasks_acyclic(tasks: &[Task]) -> Result<(), CycleError> {
    let edges = task_edges(tasks);
    check_acyclic(edges.iter().map(|(a, b)| (a.as_str(), b.as_str())))
}

/// The keys of `tasks` and of everything they depend on, predecessors first,
/// or the first cycle.
pub fn topological_order(tasks: &[Task]) -> Result<Vec<String>, CycleError> {
    let edges = task_edges(tasks);
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let keys: Vec<String> = tasks.iter().map(Task::key).collect();
    for k in &keys {
        graph.entry(k.as_str()).or_default();
    }
    for (a, b) in &edges {
        graph.entry(a.as_str()).or_default().insert(b.as_str());
        graph.entry(b.as_str()).or_default();
    }
    topo(&graph).map(|v| v.into_iter().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acyclic_ok() {
        assert!(check_acyclic([("a/x", "a/y"), ("a/y", "a/z"), ("a/x", "a/z")]).is_ok());
        assert!(check_acyclic(std::iter::empty()).is_ok());
    }

    #[test]
    fn two_cycle_named() {
        let e = check_acyclic([("a/x", "a/y"), ("a/y", "a/x")]).unwrap_err();
        assert_eq!(e.cycle, vec!["a/x", "a/y", "a/x"]);
        assert_eq!(e.to_string(), "dependency cycle: a/x -> a/y -> a/x");
    }

    #[test]
    fn self_loop_and_long_cycle() {
        let e = check_acyclic([("a/x", "a/x")]).unwrap_err();
        assert_eq!(e.cycle, vec!["a/x", "a/x"]);
        let e = check_acyclic([("a/a", "b/b"), ("b/b", "c/c"), ("c/c", "d/d"), ("d/d", "b/b")]).unwrap_err();
        assert_eq!(e.cycle, vec!["b/b", "c/c", "d/d", "b/b"]);
    }
}
