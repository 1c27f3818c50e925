use rustc_hash::FxHashMap as HashMap;

use super::path::{Segment, TopicPath};

/// A trie of patterns. A lookup costs one step per segment of the looked-up path, whatever the
/// number of registered patterns.
#[derive(Debug)]
pub struct PathTrie<T> {
    root: Node<T>,
    len: usize,
}

#[derive(Debug)]
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

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.literals.is_empty()
            && self.any.is_none()
            && self.exact.is_empty()
            && self.rest.is_empty()
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
    /// returns how many were removed.
    pub fn remove_where(
        &mut self,
        pattern: &TopicPath,
        mut remove: impl FnMut(&T) -> bool,
    ) -> usize {
        let removed = remove_in(&mut self.root, pattern, pattern.segments(), &mut remove);
        self.len -= removed;
        removed
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

    /// Every entry whose pattern matches the concrete `segments`.
    pub fn find_all<'a>(&'a self, segments: &[&str], out: &mut Vec<&'a (TopicPath, T)>) {
        find_all_in(&self.root, segments, out);
    }

    /// The most specific entry matching `segments`: literal segments win over `*`/`{param}`,
    /// which win over `>`, segment by segment from the left.
    pub fn find_best(&self, segments: &[&str]) -> Option<&(TopicPath, T)> {
        find_best_in(&self.root, segments)
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

fn remove_in<T>(
    node: &mut Node<T>,
    pattern: &TopicPath,
    rest: &[Segment],
    remove: &mut impl FnMut(&T) -> bool,
) -> usize {
    let Some((seg, tail)) = rest.split_first() else {
        return drain(&mut node.exact, pattern, remove);
    };
    match seg {
        Segment::Literal(lit) => {
            let Some(child) = node.literals.get_mut(&**lit) else {
                return 0;
            };
            let n = remove_in(child, pattern, tail, remove);
            if child.is_empty() {
                node.literals.remove(&**lit);
            }
            n
        }
        Segment::Param(_) | Segment::Single => {
            let Some(child) = node.any.as_deref_mut() else {
                return 0;
            };
            let n = remove_in(child, pattern, tail, remove);
            if child.is_empty() {
                node.any = None;
            }
            n
        }
        Segment::Rest => drain(&mut node.rest, pattern, remove),
    }
}

fn drain<T>(
    entries: &mut Vec<(TopicPath, T)>,
    pattern: &TopicPath,
    remove: &mut impl FnMut(&T) -> bool,
) -> usize {
    let before = entries.len();
    entries.retain(|(p, v)| !(p == pattern && remove(v)));
    before - entries.len()
}

fn find_all_in<'a, T>(node: &'a Node<T>, segments: &[&str], out: &mut Vec<&'a (TopicPath, T)>) {
    let Some((seg, tail)) = segments.split_first() else {
        out.extend(node.exact.iter());
        return;
    };
    out.extend(node.rest.iter());
    if let Some(child) = node.literals.get(*seg) {
        find_all_in(child, tail, out);
    }
    if let Some(child) = node.any.as_deref() {
        find_all_in(child, tail, out);
    }
}

fn find_best_in<'a, T>(node: &'a Node<T>, segments: &[&str]) -> Option<&'a (TopicPath, T)> {
    let Some((seg, tail)) = segments.split_first() else {
        return node.exact.first();
    };
    node.literals
        .get(*seg)
        .and_then(|child| find_best_in(child, tail))
        .or_else(|| {
            node.any
                .as_deref()
                .and_then(|child| find_best_in(child, tail))
        })
        .or_else(|| node.rest.first())
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
        t.find_all(&segs, &mut out);
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
}
