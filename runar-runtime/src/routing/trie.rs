use std::fmt;

use rustc_hash::FxHashMap as HashMap;

use super::path::{Segment, TopicPath};

/// A trie of patterns. A lookup costs one step per segment of the looked-up path, whatever the
/// number of registered patterns.
///
/// Nothing here recurses: every walk (insert, lookup, removal, drop) keeps its own stack or
/// loop, so a path of any depth costs heap, never call stack (nodes also bound the depth of
/// what they store: `NodeConfig::max_path_depth`).
pub struct PathTrie<T> {
    root: Node<T>,
    len: usize,
}

struct Node<T> {
    literals: HashMap<Box<str>, Node<T>>,
    /// `*` and `{param}` both match any one segment; parameters are resolved from the pattern.
    any: Option<Box<Node<T>>>,
    /// Patterns that end here.
    exact: Vec<(TopicPath, T)>,
    /// Patterns that end here with `>`.
    rest: Vec<(TopicPath, T)>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            literals: HashMap::default(),
            any: None,
            exact: Vec::new(),
            rest: Vec::new(),
        }
    }
}

/// Dropping a deep chain of nodes field by field would recurse once per level: detach the
/// children and drop them one at a time from a stack instead.
impl<T> Drop for Node<T> {
    fn drop(&mut self) {
        let mut stack: Vec<Node<T>> = Vec::new();
        take_children(self, &mut stack);
        while let Some(mut node) = stack.pop() {
            take_children(&mut node, &mut stack);
            // `node` has no children left: its own drop does not go deeper.
        }
    }
}

fn take_children<T>(node: &mut Node<T>, into: &mut Vec<Node<T>>) {
    into.extend(node.literals.drain().map(|(_, child)| child));
    if let Some(child) = node.any.take() {
        into.push(*child);
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.literals.is_empty()
            && self.any.is_none()
            && self.exact.is_empty()
            && self.rest.is_empty()
    }

    /// True when this node holds nothing but the edge for `seg`.
    fn only_edge(&self, seg: &Segment) -> bool {
        self.exact.is_empty()
            && self.rest.is_empty()
            && match seg {
                Segment::Literal(_) => self.literals.len() == 1 && self.any.is_none(),
                _ => self.literals.is_empty(),
            }
    }

    /// The child that the pattern segment `seg` leads to (`>` stays on this node).
    fn child(&self, seg: &Segment) -> Option<&Node<T>> {
        match seg {
            Segment::Literal(lit) => self.literals.get(&**lit),
            Segment::Param(_) | Segment::Single => self.any.as_deref(),
            Segment::Rest => Some(self),
        }
    }

    fn child_mut(&mut self, seg: &Segment) -> Option<&mut Node<T>> {
        match seg {
            Segment::Literal(lit) => self.literals.get_mut(&**lit),
            Segment::Param(_) | Segment::Single => self.any.as_deref_mut(),
            Segment::Rest => Some(self),
        }
    }

    /// Detaches the child that `seg` leads to; it is dropped by the caller (iteratively).
    fn remove_child(&mut self, seg: &Segment) -> Option<Node<T>> {
        match seg {
            Segment::Literal(lit) => self.literals.remove(&**lit),
            Segment::Param(_) | Segment::Single => self.any.take().map(|child| *child),
            Segment::Rest => None,
        }
    }
}

impl<T> Default for PathTrie<T> {
    fn default() -> Self {
        PathTrie {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for PathTrie<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .map(|(pattern, value)| (pattern.to_string(), value)),
            )
            .finish()
    }
}

impl<T> PathTrie<T> {
    /// An empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of stored entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `value` under `pattern`. Several values may share a pattern.
    pub fn insert(&mut self, pattern: TopicPath, value: T) {
        let mut node = &mut self.root;
        for seg in pattern.segments() {
            node = match seg {
                Segment::Literal(lit) => node.literals.entry(lit.clone()).or_default(),
                Segment::Param(_) | Segment::Single => {
                    node.any.get_or_insert_with(Default::default)
                }
                Segment::Rest => {
                    node.rest.push((pattern, value));
                    self.len += 1;
                    return;
                }
            };
        }
        node.exact.push((pattern, value));
        self.len += 1;
    }

    /// Removes the entries stored under exactly `pattern` for which `remove` returns true, and
    /// returns how many were removed. Nodes left empty are pruned.
    pub fn remove_where(
        &mut self,
        pattern: &TopicPath,
        mut remove: impl FnMut(&T) -> bool,
    ) -> usize {
        let segments = pattern.segments();
        let rest = matches!(segments.last(), Some(Segment::Rest));
        // The node the pattern ends on: a `>` is stored on the node before it.
        let edges = segments.len().saturating_sub(usize::from(rest));
        let Some(edges_path) = segments.get(..edges) else {
            return 0;
        };
        let mut node = &mut self.root;
        for seg in edges_path {
            match node.child_mut(seg) {
                Some(child) => node = child,
                None => return 0,
            }
        }
        let entries = if rest {
            &mut node.rest
        } else {
            &mut node.exact
        };
        let before = entries.len();
        entries.retain(|(p, v)| !(p == pattern && remove(v)));
        let removed = before - entries.len();
        self.len = self.len.saturating_sub(removed);
        if removed > 0 && node.is_empty() {
            self.prune(edges_path);
        }
        removed
    }

    /// Detaches the empty tail of the chain `edges` ends on: from the deepest node on the way
    /// that holds something besides the next edge (or the root), cut that edge.
    fn prune(&mut self, edges: &[Segment]) {
        let mut cut = 0;
        let mut node = &self.root;
        for (depth, seg) in edges.iter().enumerate() {
            if !node.only_edge(seg) {
                cut = depth;
            }
            match node.child(seg) {
                Some(child) => node = child,
                None => return,
            }
        }
        let (Some(to_cut), Some(seg)) = (edges.get(..cut), edges.get(cut)) else {
            return;
        };
        let mut node = &mut self.root;
        for seg in to_cut {
            match node.child_mut(seg) {
                Some(child) => node = child,
                None => return,
            }
        }
        drop(node.remove_child(seg));
    }

    /// The entries stored under exactly `pattern` (one step per segment).
    pub fn get<'a>(&'a self, pattern: &'a TopicPath) -> impl Iterator<Item = &'a T> + 'a {
        let mut node = Some(&self.root);
        let mut rest = false;
        for seg in pattern.segments() {
            node = node.and_then(|n| match seg {
                Segment::Literal(lit) => n.literals.get(&**lit),
                Segment::Param(_) | Segment::Single => n.any.as_deref(),
                Segment::Rest => {
                    rest = true;
                    Some(n)
                }
            });
        }
        node.into_iter()
            .flat_map(move |n| if rest { &n.rest } else { &n.exact })
            .filter(move |(p, _)| p == pattern)
            .map(|(_, v)| v)
    }

    /// Calls `found` with every entry whose pattern matches the concrete `segments`.
    pub fn find_all<'a>(&'a self, segments: &[&str], mut found: impl FnMut(&'a (TopicPath, T))) {
        // (node, how many segments it has consumed). Each trie node is reached by one path
        // from the root, so each is visited at most once. The node to visit next is kept
        // apart from the stack, which holds only the branches left for later: a walk down a
        // single branch (the common case) allocates nothing.
        let mut stack = Vec::new();
        let mut next = Some((&self.root, 0usize));
        while let Some((node, depth)) = next.take().or_else(|| stack.pop()) {
            let Some(seg) = segments.get(depth) else {
                node.exact.iter().for_each(&mut found);
                continue;
            };
            node.rest.iter().for_each(&mut found);
            let literal = node.literals.get(*seg);
            // The wildcard branch first, then the literal one (the order of a stack that
            // pushes the literal child before the wildcard child).
            next = match (literal, node.any.as_deref()) {
                (Some(literal), Some(any)) => {
                    stack.push((literal, depth + 1));
                    Some((any, depth + 1))
                }
                (Some(child), None) | (None, Some(child)) => Some((child, depth + 1)),
                (None, None) => None,
            };
        }
    }

    /// The most specific entry matching `segments`: literal segments win over `*`/`{param}`,
    /// which win over `>`, segment by segment from the left.
    pub fn find_best(&self, segments: &[&str]) -> Option<&(TopicPath, T)> {
        enum Step<'a, T> {
            /// Look below `node`, which has consumed `depth` segments.
            Visit(&'a Node<T>, usize),
            /// Both children of `node` failed: its `>` entries are the fallback.
            Rest(&'a Node<T>),
        }
        // A depth-first search in preference order: the literal child, then the wildcard
        // child, then the node's own `>` entries. Each trie node is visited at most once.
        let mut stack = vec![Step::Visit(&self.root, 0)];
        while let Some(step) = stack.pop() {
            match step {
                Step::Visit(node, depth) => {
                    let Some(seg) = segments.get(depth) else {
                        if let Some(found) = node.exact.first() {
                            return Some(found);
                        }
                        continue;
                    };
                    stack.push(Step::Rest(node));
                    if let Some(child) = node.any.as_deref() {
                        stack.push(Step::Visit(child, depth + 1));
                    }
                    if let Some(child) = node.literals.get(*seg) {
                        stack.push(Step::Visit(child, depth + 1));
                    }
                }
                Step::Rest(node) => {
                    if let Some(found) = node.rest.first() {
                        return Some(found);
                    }
                }
            }
        }
        None
    }

    /// Every stored entry.
    pub fn iter(&self) -> impl Iterator<Item = &(TopicPath, T)> {
        let mut stack = vec![&self.root];
        let mut items: Vec<&(TopicPath, T)> = Vec::new();
        while let Some(node) = stack.pop() {
            items.extend(node.exact.iter());
            items.extend(node.rest.iter());
            stack.extend(node.literals.values());
            stack.extend(node.any.as_deref());
        }
        items.into_iter()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn trie(patterns: &[&str]) -> PathTrie<usize> {
        let mut t = PathTrie::new();
        for (i, p) in patterns.iter().enumerate() {
            t.insert(TopicPath::parse(p).unwrap(), i);
        }
        t
    }

    fn all(t: &PathTrie<usize>, path: &str) -> Vec<usize> {
        let segs: Vec<&str> = path.split('/').collect();
        let mut out = Vec::new();
        t.find_all(&segs, |e| out.push(e));
        let mut v: Vec<usize> = out.into_iter().map(|(_, i)| *i).collect();
        v.sort();
        v
    }

    fn best(t: &PathTrie<usize>, path: &str) -> Option<usize> {
        let segs: Vec<&str> = path.split('/').collect();
        t.find_best(&segs).map(|(_, i)| *i)
    }

    #[test]
    fn find_all_matches_wildcards() {
        let t = trie(&[
            "math/add",
            "math/*",
            "math/>",
            ">",
            "*/add",
            "math/add/x",
            "other/>",
        ]);
        assert_eq!(all(&t, "math/add"), vec![0, 1, 2, 3, 4]);
        assert_eq!(all(&t, "math/add/x"), vec![2, 3, 5]);
        assert_eq!(all(&t, "math"), vec![3]); // only the bare `>`: `math/>` needs one more segment
        assert_eq!(all(&t, "other/thing"), vec![3, 6]);
    }

    #[test]
    fn best_prefers_literals() {
        let t = trie(&["items/{id}", "items/special", "items/>", "items/{id}/parts"]);
        assert_eq!(best(&t, "items/special"), Some(1));
        assert_eq!(best(&t, "items/7"), Some(0));
        assert_eq!(best(&t, "items/7/parts"), Some(3));
        assert_eq!(best(&t, "items/7/other"), Some(2));
        assert_eq!(best(&t, "nothing"), None);
        let p = TopicPath::parse("items/{id}/parts").unwrap();
        assert_eq!(t.get(&p).copied().collect::<Vec<_>>(), vec![3]);
        let p = TopicPath::parse("items/>").unwrap();
        assert_eq!(t.get(&p).copied().collect::<Vec<_>>(), vec![2]);
        let p = TopicPath::parse("items/{other}").unwrap();
        assert_eq!(t.get(&p).count(), 0, "same shape, other parameter name");
    }

    #[test]
    fn remove_prunes() {
        let mut t = trie(&["a/b", "a/{x}", "a/>"]);
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.remove_where(&TopicPath::parse("a/{x}").unwrap(), |_| true),
            1
        );
        assert_eq!(all(&t, "a/q"), vec![2]);
        assert_eq!(
            t.remove_where(&TopicPath::parse("a/b").unwrap(), |v| *v == 99),
            0
        );
        assert_eq!(
            t.remove_where(&TopicPath::parse("a/b").unwrap(), |_| true),
            1
        );
        assert_eq!(
            t.remove_where(&TopicPath::parse("a/>").unwrap(), |_| true),
            1
        );
        assert!(t.is_empty());
        assert!(t.root.is_empty());
        assert_eq!(t.iter().count(), 0);
    }

    #[test]
    fn remove_prunes_only_the_dead_branch() {
        let mut t = trie(&["a/b/c/d", "a/b", "a/{x}/c", "a/b/>"]);
        let p = TopicPath::parse("a/b/c/d").unwrap();
        assert_eq!(t.remove_where(&p, |_| true), 1);
        // `a/b` still holds an entry and `a/b/>`; `c/d` below it is gone.
        let b = t.root.literals.get("a").unwrap().literals.get("b").unwrap();
        assert!(b.literals.is_empty());
        assert_eq!(all(&t, "a/b"), vec![1]);
        assert_eq!(all(&t, "a/b/c"), vec![2, 3]);
        assert_eq!(best(&t, "a/b/c"), Some(3));
        let p = TopicPath::parse("a/b/>").unwrap();
        assert_eq!(t.remove_where(&p, |_| true), 1);
        assert_eq!(best(&t, "a/b/c"), Some(2));
        for p in ["a/b", "a/{x}/c"] {
            let p = TopicPath::parse(p).unwrap();
            assert_eq!(t.remove_where(&p, |_| true), 1);
        }
        assert!(t.root.is_empty());
    }

    /// A path of 200,000 segments: every walk would overflow the stack if it recursed once per
    /// segment (inserting, looking up, removing, formatting and dropping).
    #[test]
    fn deep_paths_do_not_overflow_the_stack() {
        const DEPTH: usize = 200_000;
        let deep = format!("{}{{x}}", "a/".repeat(DEPTH - 1));
        let deep_rest = format!("{}>", "a/".repeat(DEPTH - 1));
        let concrete = vec!["a"; DEPTH];
        let mut t = PathTrie::new();
        t.insert(TopicPath::parse(&deep).unwrap(), 1);
        t.insert(TopicPath::parse(&deep_rest).unwrap(), 2);
        t.insert(TopicPath::parse("a/a").unwrap(), 3);
        let mut out = Vec::new();
        t.find_all(&concrete, |e| out.push(e));
        assert_eq!(out.len(), 2);
        assert_eq!(t.find_best(&concrete).map(|(_, v)| *v), Some(1));
        assert_eq!(t.iter().count(), 3);
        assert!(format!("{t:?}").len() > DEPTH);
        let p = TopicPath::parse(&deep).unwrap();
        assert_eq!(t.get(&p).count(), 1);
        assert_eq!(t.remove_where(&p, |_| true), 1);
        assert_eq!(t.find_best(&concrete).map(|(_, v)| *v), Some(2));
        drop(t); // still holds the deep `>` pattern

        // Removing the only deep pattern prunes the whole chain at once.
        let mut t = PathTrie::new();
        t.insert(TopicPath::parse(&deep_rest).unwrap(), 1);
        let p = TopicPath::parse(&deep_rest).unwrap();
        assert_eq!(t.remove_where(&p, |_| true), 1);
        assert!(t.root.is_empty());
    }
}
