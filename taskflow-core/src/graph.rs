//! The task graph: an adjacency list plus a hash index from task id to node.
//!
//! The graph is fixed per deployment (loaded from the flow file). "What becomes runnable when
//! task X finishes" is answered by [`Readiness::mark_done`] in time proportional to X's
//! out-degree: every task keeps a counter of predecessors not yet done, and finishing X only
//! touches X's successors. Nothing ever scans all tasks.

use std::collections::HashMap;

use crate::model::TaskId;

/// A dense index of a task in a [`TaskGraph`], stable for the graph's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskIx(pub u32);

impl TaskIx {
    /// The index as a `usize`, for slices.
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

/// Why a set of tasks and dependencies is not a valid graph.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Two tasks share an id.
    #[error("duplicate task id `{0}`")]
    DuplicateTask(TaskId),
    /// A task depends on an id that no task has.
    #[error("task `{task}` depends on unknown task `{dependency}`")]
    UnknownDependency {
        /// The task that names the dependency.
        task: TaskId,
        /// The unknown id.
        dependency: TaskId,
    },
    /// A task depends on itself, directly or through others. The path starts and ends with
    /// the same task: `[a, b, c, a]` means a → b → c → a ("a depends on b" …).
    #[error("dependency cycle: {}", format_cycle(.0))]
    Cycle(Vec<TaskId>),
}

fn format_cycle(path: &[TaskId]) -> String {
    path.iter().map(TaskId::as_str).collect::<Vec<_>>().join(" -> ")
}

/// The immutable dependency graph of a flow.
#[derive(Debug, Clone)]
pub struct TaskGraph {
    ids: Vec<TaskId>,
    index: HashMap<TaskId, TaskIx>,
    /// `succ[i]`: the tasks that depend on task `i`.
    succ: Vec<Vec<TaskIx>>,
    /// `pred[i]`: the tasks that task `i` depends on.
    pred: Vec<Vec<TaskIx>>,
    topo: Vec<TaskIx>,
    /// `level[i]`: the number of tasks on the longest dependency path ending at `i`.
    level: Vec<u32>,
}

impl TaskGraph {
    /// Builds the graph from `(task, dependencies)` pairs, in the order given.
    ///
    /// Fails on duplicate ids, unknown dependencies and cycles (the first cycle found is
    /// returned as a path). A dependency listed twice counts once.
    pub fn build<I>(nodes: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = (TaskId, Vec<TaskId>)>,
    {
        let nodes: Vec<(TaskId, Vec<TaskId>)> = nodes.into_iter().collect();
        let mut index = HashMap::with_capacity(nodes.len());
        let mut ids = Vec::with_capacity(nodes.len());
        for (i, (id, _)) in nodes.iter().enumerate() {
            if index.insert(id.clone(), TaskIx(i as u32)).is_some() {
                return Err(Error::DuplicateTask(id.clone()));
            }
            ids.push(id.clone());
        }
        let mut succ = vec![Vec::new(); nodes.len()];
        let mut pred = vec![Vec::new(); nodes.len()];
        for (i, (id, deps)) in nodes.iter().enumerate() {
            for dep in deps {
                let Some(&d) = index.get(dep) else {
                    return Err(Error::UnknownDependency {
                        task: id.clone(),
                        dependency: dep.clone(),
                    });
                };
                if !pred[i].contains(&d) {
                    pred[i].push(d);
                    succ[d.get()].push(TaskIx(i as u32));
                }
            }
        }
        if let Some(cycle) = find_cycle(&pred) {
            return Err(Error::Cycle(cycle.into_iter().map(|ix| ids[ix.get()].clone()).collect()));
        }
        let (topo, level) = topo_levels(&succ, &pred);
        Ok(TaskGraph { ids, index, succ, pred, topo, level })
    }

    /// The number of tasks.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the graph has no task.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The index of a task id.
    pub fn index_of(&self, id: &str) -> Option<TaskIx> {
        self.index.get(id).copied()
    }

    /// The id of a task index. Panics on an index from another graph (a programming error).
    pub fn id(&self, ix: TaskIx) -> &TaskId {
        &self.ids[ix.get()]
    }

    /// Every task index, in definition order.
    pub fn indices(&self) -> impl ExactSizeIterator<Item = TaskIx> + '_ {
        (0..self.ids.len() as u32).map(TaskIx)
    }

    /// The tasks that depend on `ix`.
    pub fn successors(&self, ix: TaskIx) -> &[TaskIx] {
        &self.succ[ix.get()]
    }

    /// The tasks that `ix` depends on.
    pub fn predecessors(&self, ix: TaskIx) -> &[TaskIx] {
        &self.pred[ix.get()]
    }

    /// Tasks with no dependency: what the day's bootstrap registers first.
    pub fn roots(&self) -> impl Iterator<Item = TaskIx> + '_ {
        self.indices().filter(|ix| self.pred[ix.get()].is_empty())
    }

    /// Tasks nothing depends on: when all of them are done, the day is done.
    pub fn sinks(&self) -> impl Iterator<Item = TaskIx> + '_ {
        self.indices().filter(|ix| self.succ[ix.get()].is_empty())
    }

    /// A topological order: every task comes after all its dependencies.
    pub fn topo_order(&self) -> &[TaskIx] {
        &self.topo
    }

    /// The 1-based position of `ix` on the longest dependency path that ends at it.
    pub fn level(&self, ix: TaskIx) -> u32 {
        self.level[ix.get()]
    }

    /// The number of tasks on the longest dependency path (0 for an empty graph).
    pub fn depth(&self) -> u32 {
        self.level.iter().copied().max().unwrap_or(0)
    }

    /// Every task that depends on `ix`, directly or transitively, in topological order.
    pub fn descendants(&self, ix: TaskIx) -> Vec<TaskIx> {
        let mut seen = vec![false; self.len()];
        let mut stack = vec![ix];
        while let Some(n) = stack.pop() {
            for &s in &self.succ[n.get()] {
                if !seen[s.get()] {
                    seen[s.get()] = true;
                    stack.push(s);
                }
            }
        }
        self.topo.iter().copied().filter(|t| seen[t.get()]).collect()
    }
}

/// Per-day readiness: for each task, how many of its dependencies are not done yet.
///
/// "Done" means succeeded, skipped, or not applicable on the date (an empty scope): a holiday
/// must never block the chain. Marking a task done returns the successors that just became
/// ready, touching only the task's out-edges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Readiness {
    remaining: Vec<u32>,
    done: Vec<bool>,
    /// How many entries of `done` are set.
    done_count: usize,
}

impl Readiness {
    /// Every task starts with all its dependencies outstanding.
    pub(crate) fn new(graph: &TaskGraph) -> Self {
        Readiness {
            remaining: graph.pred.iter().map(|p| p.len() as u32).collect(),
            done: vec![false; graph.len()],
            done_count: 0,
        }
    }

    /// Whether every task is done (O(1)).
    pub(crate) fn all_done(&self) -> bool {
        self.done_count == self.done.len()
    }

    /// Whether every dependency of `ix` is done.
    pub(crate) fn is_ready(&self, ix: TaskIx) -> bool {
        self.remaining[ix.get()] == 0
    }

    /// Whether `ix` itself is done.
    pub(crate) fn is_done(&self, ix: TaskIx) -> bool {
        self.done[ix.get()]
    }

    /// Marks `ix` done and returns the successors whose last outstanding dependency it was.
    /// Marking a task that is already done changes nothing and returns nothing.
    pub(crate) fn mark_done(&mut self, graph: &TaskGraph, ix: TaskIx) -> Vec<TaskIx> {
        if std::mem::replace(&mut self.done[ix.get()], true) {
            return Vec::new();
        }
        self.done_count += 1;
        let mut ready = Vec::new();
        for &s in graph.successors(ix) {
            let r = &mut self.remaining[s.get()];
            *r -= 1;
            if *r == 0 {
                ready.push(s);
            }
        }
        ready
    }

    /// Undoes [`Readiness::mark_done`] (a rollback of a done task): its successors wait for it
    /// again. Undoing a task that is not done changes nothing.
    pub(crate) fn mark_undone(&mut self, graph: &TaskGraph, ix: TaskIx) {
        if !std::mem::replace(&mut self.done[ix.get()], false) {
            return;
        }
        self.done_count -= 1;
        for &s in graph.successors(ix) {
            self.remaining[s.get()] += 1;
        }
    }
}

/// Finds one cycle in the graph given by predecessor lists, as a closed path of "depends on"
/// edges (`[a, b, a]`: a depends on b, b depends on a).
fn find_cycle(pred: &[Vec<TaskIx>]) -> Option<Vec<TaskIx>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Finished,
    }
    let mut mark = vec![Mark::New; pred.len()];
    for start in 0..pred.len() {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS: the path and, per path entry, the next edge to try.
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        mark[start] = Mark::OnPath;
        while let Some(&mut (node, ref mut edge)) = path.last_mut() {
            if let Some(&next) = pred[node].get(*edge) {
                *edge += 1;
                let next = next.get();
                match mark[next] {
                    Mark::New => {
                        mark[next] = Mark::OnPath;
                        path.push((next, 0));
                    }
                    Mark::OnPath => {
                        let from = path.iter().position(|&(n, _)| n == next).unwrap_or(0);
                        let mut cycle: Vec<TaskIx> =
                            path[from..].iter().map(|&(n, _)| TaskIx(n as u32)).collect();
                        cycle.push(TaskIx(next as u32));
                        return Some(cycle);
                    }
                    Mark::Finished => {}
                }
            } else {
                mark[node] = Mark::Finished;
                path.pop();
            }
        }
    }
    None
}

/// Kahn's algorithm over an acyclic graph: a topological order and each node's level.
fn topo_levels(succ: &[Vec<TaskIx>], pred: &[Vec<TaskIx>]) -> (Vec<TaskIx>, Vec<u32>) {
    let mut indegree: Vec<usize> = pred.iter().map(Vec::len).collect();
    let mut level = vec![1u32; pred.len()];
    let mut queue: std::collections::VecDeque<usize> =
        (0..pred.len()).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(pred.len());
    while let Some(n) = queue.pop_front() {
        order.push(TaskIx(n as u32));
        for &s in &succ[n] {
            let s = s.get();
            level[s] = level[s].max(level[n] + 1);
            indegree[s] -= 1;
            if indegree[s] == 0 {
                queue.push_back(s);
            }
        }
    }
    (order, level)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(spec: &[(&str, &[&str])]) -> Result<TaskGraph, Error> {
        TaskGraph::build(
            spec.iter().map(|(id, deps)| {
                (TaskId::new(*id), deps.iter().map(|d| TaskId::new(*d)).collect())
            }),
        )
    }

    #[test]
    fn finishing_a_task_readies_exactly_the_successors_whose_last_dependency_it_was() {
        let g = graph(&[("a", &[]), ("b", &[]), ("c", &["a", "b"]), ("d", &["a"])]).unwrap();
        let mut r = Readiness::new(&g);
        let ix = |s: &str| g.index_of(s).unwrap();
        assert!(r.is_ready(ix("a")) && !r.is_ready(ix("c")));
        assert_eq!(r.mark_done(&g, ix("a")), vec![ix("d")]);
        assert_eq!(r.mark_done(&g, ix("a")), vec![], "marking twice is idempotent");
        assert_eq!(r.mark_done(&g, ix("b")), vec![ix("c")]);
        r.mark_undone(&g, ix("b"));
        assert!(!r.is_ready(ix("c")));
        assert_eq!(r.mark_done(&g, ix("b")), vec![ix("c")]);
    }

    #[test]
    fn a_cycle_is_reported_as_a_closed_path() {
        let err = graph(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"]), ("x", &[])]).unwrap_err();
        let Error::Cycle(path) = &err else { panic!("expected a cycle, got {err:?}") };
        assert_eq!(path.first(), path.last());
        assert_eq!(path.len(), 4);
        assert_eq!(err.to_string(), "dependency cycle: a -> c -> b -> a");
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let err = graph(&[("a", &["a"])]).unwrap_err();
        assert_eq!(err, Error::Cycle(vec![TaskId::new("a"), TaskId::new("a")]));
    }

    #[test]
    fn unknown_dependency_and_duplicate_ids_are_rejected() {
        assert_eq!(
            graph(&[("a", &["zz"])]).unwrap_err(),
            Error::UnknownDependency { task: TaskId::new("a"), dependency: TaskId::new("zz") }
        );
        assert_eq!(
            graph(&[("a", &[]), ("a", &[])]).unwrap_err(),
            Error::DuplicateTask(TaskId::new("a"))
        );
    }

    #[test]
    fn depth_topo_order_and_descendants() {
        let g = graph(&[("d", &["c"]), ("c", &["b"]), ("b", &["a"]), ("a", &[]), ("e", &["a"])])
            .unwrap();
        assert_eq!(g.depth(), 4);
        let pos =
            |s: &str| g.topo_order().iter().position(|&t| t == g.index_of(s).unwrap()).unwrap();
        assert!(pos("a") < pos("b") && pos("b") < pos("c") && pos("c") < pos("d"));
        let desc: Vec<&str> =
            g.descendants(g.index_of("b").unwrap()).iter().map(|&t| g.id(t).as_str()).collect();
        assert_eq!(desc, vec!["c", "d"]);
        assert_eq!(g.roots().count(), 1);
        assert_eq!(g.sinks().count(), 2);
    }

    #[test]
    fn long_chains_do_not_overflow_the_stack() {
        let n = 100_000;
        let g = TaskGraph::build((0..n).map(|i| {
            let deps = if i == 0 { vec![] } else { vec![TaskId::new(format!("t{}", i - 1))] };
            (TaskId::new(format!("t{i}")), deps)
        }))
        .unwrap();
        assert_eq!(g.depth(), n);
    }
}
