use std::borrow::Cow;
use std::fmt;

/// Why a path is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path is empty.
    #[error("invalid path `{0}`: the path is empty")]
    Empty(String),
    /// Two slashes in a row, or a leading or trailing slash.
    #[error(
        "invalid path `{path}`: segment {position} is empty (check for `//` or a leading or trailing `/`)"
    )]
    EmptySegment {
        /// The path as given.
        path: String,
        /// The 1-based position of the empty segment.
        position: usize,
    },
    /// More than one `:` network separator.
    #[error("invalid path `{0}`: more than one `:` (the form is `network:seg/seg`)")]
    TooManyNetworkSeparators(String),
    /// `network:` with an empty network name.
    #[error("invalid path `{0}`: the network name before `:` is empty")]
    EmptyNetwork(String),
    /// `>` somewhere other than the last segment.
    #[error("invalid path `{0}`: `>` matches the rest of a path and must be the last segment")]
    RestNotLast(String),
    /// A `{…}` template that is not a whole segment `{name}` with a valid name.
    #[error(
        "invalid path `{path}`: malformed template `{segment}` (write a whole segment `{{name}}`, name = letters, digits, `_`)"
    )]
    MalformedTemplate {
        /// The path as given.
        path: String,
        /// The offending segment.
        segment: String,
    },
    /// A wildcard mixed with other characters, whitespace or a control character.
    #[error(
        "invalid path `{path}`: segment `{segment}` has a character that is not allowed (`*` and `>` stand alone; no whitespace)"
    )]
    InvalidCharacter {
        /// The path as given.
        path: String,
        /// The offending segment.
        segment: String,
    },
    /// A wildcard or template where a concrete path is required (requests, publishes).
    #[error(
        "invalid path `{0}`: requests and events need a concrete path, without `*`, `>` or `{{…}}`"
    )]
    NotConcrete(String),
    /// Longer than the node allows ([`NodeConfig::max_path_len`](crate::NodeConfig::max_path_len)).
    #[error(
        "invalid path `{start}…`: {len} bytes, over the limit of {max} (NodeConfig::max_path_len)"
    )]
    TooLong {
        /// The start of the path as given.
        start: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More segments than the node allows
    /// ([`NodeConfig::max_path_depth`](crate::NodeConfig::max_path_depth)).
    #[error(
        "invalid path `{start}…`: {depth} segments, over the limit of {max} (NodeConfig::max_path_depth)"
    )]
    TooDeep {
        /// The start of the path as given.
        start: String,
        /// Its number of segments.
        depth: usize,
        /// The limit.
        max: usize,
    },
}

/// The default of [`NodeConfig::max_path_len`](crate::NodeConfig::max_path_len), in bytes.
pub(crate) const DEFAULT_MAX_PATH_LEN: usize = 1024;
/// The default of [`NodeConfig::max_path_depth`](crate::NodeConfig::max_path_depth), in segments.
pub(crate) const DEFAULT_MAX_PATH_DEPTH: usize = 32;

/// How long (bytes, `network:` prefix included) and how deep (segments) a path may be. A node
/// checks every path it is given or sent against the limits of its configuration before
/// anything else looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PathLimits {
    pub(crate) max_len: usize,
    pub(crate) max_depth: usize,
}

impl Default for PathLimits {
    fn default() -> Self {
        PathLimits {
            max_len: DEFAULT_MAX_PATH_LEN,
            max_depth: DEFAULT_MAX_PATH_DEPTH,
        }
    }
}

impl PathLimits {
    /// Refuses a path over the limits; costs at most `max_len` steps, whatever the input.
    pub(crate) fn check(&self, full: &str) -> Result<(), PathError> {
        if full.len() > self.max_len {
            return Err(PathError::TooLong {
                start: start_of(full),
                len: full.len(),
                max: self.max_len,
            });
        }
        // A network name has no `/`, so every `/` separates two segments of the path.
        let depth = full
            .bytes()
            .filter(|&b| b == b'/')
            .count()
            .saturating_add(1);
        if depth > self.max_depth {
            return Err(PathError::TooDeep {
                start: start_of(full),
                depth,
                max: self.max_depth,
            });
        }
        Ok(())
    }
}

/// The first few dozen characters of `full`, for an error about a path too large to quote.
fn start_of(full: &str) -> String {
    full.chars().take(48).collect()
}

impl From<PathError> for crate::Error {
    fn from(e: PathError) -> Self {
        crate::Error::invalid_argument(e.to_string())
    }
}

/// One segment of a [`TopicPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A literal segment, matched exactly.
    Literal(Box<str>),
    /// `{name}`: matches one segment and captures it as the parameter `name`.
    Param(Box<str>),
    /// `*`: matches one segment.
    Single,
    /// `>`: matches one or more trailing segments.
    Rest,
}

/// A parsed, validated topic path or pattern.
///
/// ```
/// use runar_runtime::routing::TopicPath;
/// let p = TopicPath::parse("shop:inventory/items/{id}").unwrap();
/// assert_eq!(p.network(), Some("shop"));
/// assert_eq!(p.path(), "inventory/items/{id}");
/// assert!(p.is_pattern());
/// assert_eq!(p.params(&["inventory", "items", "7"]).unwrap().get("id"), Some("7"));
/// assert!(TopicPath::parse("a//b").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicPath {
    network: Option<Box<str>>,
    path: Box<str>,
    segments: Vec<Segment>,
}

/// Splits an optional `network:` prefix off a path.
pub fn split_network(full: &str) -> Result<(Option<&str>, &str), PathError> {
    // A byte search: `:` is ASCII, and this runs on every request.
    match full.bytes().position(|b| b == b':') {
        None => Ok((None, full)),
        Some(at) => {
            let (network, rest) = (
                full.get(..at).unwrap_or_default(),
                full.get(at + 1..).unwrap_or_default(),
            );
            if rest.contains(':') {
                return Err(PathError::TooManyNetworkSeparators(full.to_owned()));
            }
            if network.is_empty() {
                return Err(PathError::EmptyNetwork(full.to_owned()));
            }
            if network
                .chars()
                .any(|c| c == '/' || is_reserved(c) || c.is_whitespace() || c.is_control())
            {
                return Err(PathError::InvalidCharacter {
                    path: full.to_owned(),
                    segment: network.to_owned(),
                });
            }
            Ok((Some(network), rest))
        }
    }
}

/// `path` in `network`: prefixed with it (`network:path`) unless it names a network itself or
/// there is none to add.
pub(crate) fn in_network<'a>(network: Option<&str>, path: &'a str) -> Cow<'a, str> {
    match network {
        Some(network) if !path.contains(':') => format!("{network}:{path}").into(),
        _ => path.into(),
    }
}

fn is_reserved(c: char) -> bool {
    matches!(c, '*' | '>' | '{' | '}')
}

fn is_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A validated segment, borrowing from the path: [`Segment`] without the allocations.
enum SegmentRef<'a> {
    Literal(&'a str),
    Param(&'a str),
    Single,
    Rest,
}

fn check_segment<'a>(
    full: &str,
    seg: &'a str,
    position: usize,
    last: bool,
) -> Result<SegmentRef<'a>, PathError> {
    match seg {
        "" => Err(PathError::EmptySegment {
            path: full.to_owned(),
            position,
        }),
        "*" => Ok(SegmentRef::Single),
        ">" if last => Ok(SegmentRef::Rest),
        ">" => Err(PathError::RestNotLast(full.to_owned())),
        _ if seg.contains('{') || seg.contains('}') => {
            match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) if is_param_name(name) => Ok(SegmentRef::Param(name)),
                _ => Err(PathError::MalformedTemplate {
                    path: full.to_owned(),
                    segment: seg.to_owned(),
                }),
            }
        }
        _ if seg
            .chars()
            .any(|c| is_reserved(c) || c.is_whitespace() || c.is_control()) =>
        {
            Err(PathError::InvalidCharacter {
                path: full.to_owned(),
                segment: seg.to_owned(),
            })
        }
        _ => Ok(SegmentRef::Literal(seg)),
    }
}

fn parse_segment(full: &str, seg: &str, position: usize, last: bool) -> Result<Segment, PathError> {
    Ok(match check_segment(full, seg, position, last)? {
        SegmentRef::Literal(s) => Segment::Literal(s.into()),
        SegmentRef::Param(name) => Segment::Param(name.into()),
        SegmentRef::Single => Segment::Single,
        SegmentRef::Rest => Segment::Rest,
    })
}

/// True when `full` is certainly a valid concrete path without a network prefix, within
/// `limits`: non-empty segments of printable ASCII other than the reserved characters and `:`,
/// no longer or deeper than allowed. One pass over the bytes, for the topics every publish and
/// every event from a peer carry; anything else (a network prefix, non-ASCII text) takes the
/// full check, which also names the error.
fn is_plain_concrete(full: &str, limits: PathLimits) -> bool {
    if full.len() > limits.max_len {
        return false;
    }
    let mut previous = b'/';
    let mut depth = 1usize;
    for b in full.bytes() {
        let fine = match b {
            b'/' => {
                depth = depth.saturating_add(1);
                previous != b'/'
            }
            b'*' | b'>' | b'{' | b'}' | b':' => false,
            _ => b.is_ascii_graphic(),
        };
        if !fine {
            return false;
        }
        previous = b;
    }
    previous != b'/' && depth <= limits.max_depth
}

/// The most segments [`with_segments`] collects on the stack; deeper paths use a `Vec`.
const STACK_SEGMENTS: usize = 16;

/// Calls `f` with the `/`-separated segments of `path`, collected on the stack when there are
/// at most [`STACK_SEGMENTS`] of them (a publish's topic, split for the subscription trie).
pub(crate) fn with_segments<R>(path: &str, f: impl FnOnce(&[&str]) -> R) -> R {
    let mut stack = [""; STACK_SEGMENTS];
    let mut n = 0;
    for seg in path.split('/') {
        let Some(slot) = stack.get_mut(n) else {
            let all: Vec<&str> = path.split('/').collect();
            return f(&all);
        };
        *slot = seg;
        n += 1;
    }
    f(stack.get(..n).unwrap_or_default())
}

/// Validates a concrete path exactly as [`TopicPath::parse_concrete_within`] does (same errors)
/// and splits off its network, without building a [`TopicPath`]: for the publish path, which
/// only needs the text.
pub(crate) fn split_concrete(
    full: &str,
    limits: PathLimits,
) -> Result<(Option<&str>, &str), PathError> {
    if is_plain_concrete(full, limits) {
        return Ok((None, full));
    }
    limits.check(full)?;
    let (network, path) = split_network(full)?;
    if path.is_empty() {
        return Err(PathError::Empty(full.to_owned()));
    }
    let count = path.split('/').count();
    let mut pattern = false;
    for (i, seg) in path.split('/').enumerate() {
        if !matches!(
            check_segment(full, seg, i + 1, i + 1 == count)?,
            SegmentRef::Literal(_)
        ) {
            pattern = true;
        }
    }
    if pattern {
        return Err(PathError::NotConcrete(full.to_owned()));
    }
    Ok((network, path))
}

impl TopicPath {
    /// [`parse`](Self::parse) within `limits`: what a node does with a path it is given.
    pub(crate) fn parse_within(full: &str, limits: PathLimits) -> Result<Self, PathError> {
        limits.check(full)?;
        Self::parse(full)
    }

    /// [`parse_concrete`](Self::parse_concrete) within `limits`.
    pub(crate) fn parse_concrete_within(full: &str, limits: PathLimits) -> Result<Self, PathError> {
        limits.check(full)?;
        Self::parse_concrete(full)
    }

    /// Parses and validates a path or pattern. Only the syntax is checked here: a node also
    /// refuses paths over its length and depth limits
    /// ([`NodeConfig::max_path_len`](crate::NodeConfig::max_path_len),
    /// [`max_path_depth`](crate::NodeConfig::max_path_depth)).
    pub fn parse(full: &str) -> Result<Self, PathError> {
        let (network, path) = split_network(full)?;
        if path.is_empty() {
            return Err(PathError::Empty(full.to_owned()));
        }
        let count = path.split('/').count();
        let segments = path
            .split('/')
            .enumerate()
            .map(|(i, seg)| parse_segment(full, seg, i + 1, i + 1 == count))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TopicPath {
            network: network.map(Into::into),
            path: path.into(),
            segments,
        })
    }

    /// Parses a path that must be concrete (no wildcards or templates), as requests and
    /// publishes need.
    pub fn parse_concrete(full: &str) -> Result<Self, PathError> {
        let p = Self::parse(full)?;
        if p.is_pattern() {
            return Err(PathError::NotConcrete(full.to_owned()));
        }
        Ok(p)
    }

    /// The same path under a network; a path that names its own network keeps it.
    pub fn in_network(mut self, network: &str) -> Self {
        if self.network.is_none() {
            self.network = Some(network.into());
        }
        self
    }

    /// The network named by the path, if any.
    pub fn network(&self) -> Option<&str> {
        self.network.as_deref()
    }

    /// The path without its network prefix.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The parsed segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// True when the path has a wildcard or a template.
    pub fn is_pattern(&self) -> bool {
        self.segments
            .iter()
            .any(|s| !matches!(s, Segment::Literal(_)))
    }

    /// The path parameters when this pattern matches the concrete `segments`, else `None`.
    pub fn params(&self, segments: &[&str]) -> Option<PathParams> {
        let mut params = PathParams::default();
        let mut concrete = segments.iter();
        for seg in &self.segments {
            match seg {
                Segment::Rest => return concrete.next().map(|_| params),
                Segment::Single => {
                    concrete.next()?;
                }
                Segment::Literal(lit) => {
                    if concrete.next()? != &&**lit {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let value = concrete.next()?;
                    params.0.push((name.clone(), (*value).to_owned()));
                }
            }
        }
        concrete.next().is_none().then_some(params)
    }

    /// True when this pattern matches the concrete `segments`.
    pub fn matches(&self, segments: &[&str]) -> bool {
        self.matches_segments(segments.iter().copied())
    }

    /// True when this pattern matches the concrete `topic` (a path without network), read
    /// segment by segment where it lies.
    pub(crate) fn matches_topic(&self, topic: &str) -> bool {
        self.matches_segments(topic.split('/'))
    }

    /// [`params`](Self::params)`.is_some()`, without collecting the params.
    fn matches_segments<'a>(&self, mut concrete: impl Iterator<Item = &'a str>) -> bool {
        for seg in &self.segments {
            match seg {
                Segment::Rest => return concrete.next().is_some(),
                Segment::Single | Segment::Param(_) => {
                    if concrete.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(lit) => {
                    if concrete.next() != Some(&**lit) {
                        return false;
                    }
                }
            }
        }
        concrete.next().is_none()
    }
}

impl fmt::Display for TopicPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.network {
            Some(n) => write!(f, "{n}:{}", self.path),
            None => f.write_str(&self.path),
        }
    }
}

impl std::str::FromStr for TopicPath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Values captured by `{name}` segments of a pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathParams(Vec<(Box<str>, String)>);

impl PathParams {
    /// The value of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All parameters, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (&**n, v.as_str()))
    }

    /// True when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<&str> {
        p.split('/').collect()
    }

    #[test]
    fn with_segments_splits_as_split_does() {
        for path in ["a", "a/b/c", "", "a//b", &"x/".repeat(40)] {
            let expected: Vec<&str> = path.split('/').collect();
            with_segments(path, |segments| assert_eq!(segments, expected, "{path}"));
        }
    }

    #[test]
    fn split_concrete_agrees_with_parse_concrete() {
        for full in [
            "math/add",
            "math",
            "net:math/add",
            "a/b/c/d/e",
            "items/{id}",
            "math/*",
            "math/>",
            ">",
            "",
            "net:",
            ":math/add",
            "a:b:c",
            "a//b",
            "/a",
            "a/",
            "a/>/b",
            "a/{}",
            "a/{1x}",
            "a/b c",
            "a/x*",
            "n e:t/a",
            "n*:a",
            "$registry/peer/x/connected",
            "a/{b}/>/c",
            "a/*/{id}",
            // The one-pass check for plain paths and the fallback it leaves the rest to.
            "bench/tick",
            "~!@#$%^&()/+=[]|",
            ";',?\"`-_./a",
            "abcdefghij/klmno",
            "abcdefghij/klmnop",
            "a/b/c/d",
            "a/b/c//",
            "net:a/b",
            "a/b/",
            "//",
            "/",
            "a/b}",
            "a/{b",
            "a/b>c",
            "a/b*",
            "é/ü",
            "a/b\u{a0}c",
            "a/b\tc",
            "a/b\u{7f}",
            "a/\u{0}",
        ] {
            let limits = PathLimits {
                max_len: 16,
                max_depth: 4,
            };
            let expected = TopicPath::parse_concrete_within(full, limits)
                .map(|p| (p.network().map(str::to_owned), p.path().to_owned()));
            let got =
                split_concrete(full, limits).map(|(n, p)| (n.map(str::to_owned), p.to_owned()));
            assert_eq!(got, expected, "{full:?}");
        }
    }

    #[test]
    fn limits_bound_length_and_depth() {
        let limits = PathLimits::default();
        let at_depth = vec!["s"; DEFAULT_MAX_PATH_DEPTH].join("/");
        assert!(TopicPath::parse_within(&at_depth, limits).is_ok());
        let e = TopicPath::parse_within(&format!("{at_depth}/s"), limits).unwrap_err();
        assert!(
            matches!(e, PathError::TooDeep { depth, max, .. } if depth == max + 1),
            "{e}"
        );
        let at_len = format!("net:{}", "x".repeat(DEFAULT_MAX_PATH_LEN - 4));
        assert!(TopicPath::parse_within(&at_len, limits).is_ok());
        let e = TopicPath::parse_within(&format!("{at_len}x"), limits).unwrap_err();
        assert!(matches!(e, PathError::TooLong { .. }), "{e}");

        // The limits come first, and the error quotes only the start of a huge path.
        let huge = format!("{}a", "a/".repeat(200_000));
        let e = TopicPath::parse_within(&huge, limits).unwrap_err();
        assert!(matches!(e, PathError::TooLong { len: 400_001, .. }), "{e}");
        assert!(e.to_string().len() < 200, "{e}");
        assert!(split_concrete(&huge, limits).is_err());
        // Plain `parse` checks only the syntax, and copes with any depth.
        assert_eq!(TopicPath::parse(&huge).unwrap().segments().len(), 200_001);
    }

    #[test]
    fn parse_table() {
        // (input, valid?)
        let cases: &[(&str, bool)] = &[
            ("math/add", true),
            ("math", true),
            ("net:math/add", true),
            ("a/b/c/d/e", true),
            ("items/{id}", true),
            ("items/{id}/parts/{part_no}", true),
            ("math/*", true),
            ("math/>", true),
            (">", true),
            ("*/x/>", true),
            ("$registry/peer/{id}/connected", true),
            ("", false),
            ("net:", false),
            (":math/add", false),
            ("a:b:c", false),
            ("a//b", false),
            ("/a", false),
            ("a/", false),
            ("a/>/b", false),
            ("a/{}", false),
            ("a/{1x}", false),
            ("a/{id", false),
            ("a/id}", false),
            ("a/x{id}", false),
            ("a/b*", false),
            ("a/>>", false),
            ("a b/c", false),
            ("a/\u{7}", false),
        ];
        for (input, ok) in cases {
            assert_eq!(TopicPath::parse(input).is_ok(), *ok, "parse({input:?})");
        }
    }

    #[test]
    fn error_messages_name_the_problem() {
        let e = TopicPath::parse("a//b").unwrap_err();
        assert!(e.to_string().contains("segment 2 is empty"), "{e}");
        let e = TopicPath::parse("a/>/b").unwrap_err();
        assert!(matches!(e, PathError::RestNotLast(_)));
        let e = TopicPath::parse("a/{x-y}").unwrap_err();
        assert!(e.to_string().contains("{x-y}"), "{e}");
        let e = TopicPath::parse("a:b:c").unwrap_err();
        assert!(matches!(e, PathError::TooManyNetworkSeparators(_)));
        let e = TopicPath::parse_concrete("a/*").unwrap_err();
        assert!(matches!(e, PathError::NotConcrete(_)));
    }

    #[test]
    fn match_table() {
        // (pattern, concrete, matches?)
        let cases: &[(&str, &str, bool)] = &[
            ("math/add", "math/add", true),
            ("math/add", "math/sub", false),
            ("math/add", "math/add/x", false),
            ("math/*", "math/add", true),
            ("math/*", "math", false),
            ("math/*", "math/a/b", false),
            ("*/add", "math/add", true),
            ("math/>", "math/add", true),
            ("math/>", "math/a/b/c", true),
            ("math/>", "math", false), // `>` needs at least one segment
            (">", "anything/at/all", true),
            ("items/{id}", "items/7", true),
            ("items/{id}", "items", false),
            ("items/{id}/x", "items/7/x", true),
            ("items/{id}/x", "items/7/y", false),
        ];
        for (pattern, path, ok) in cases {
            let p = TopicPath::parse(pattern).unwrap();
            assert_eq!(p.matches(&segs(path)), *ok, "{pattern} ~ {path}");
        }
    }

    #[test]
    fn params_are_captured() {
        let p = TopicPath::parse("shop/{shop}/items/{id}").unwrap();
        let params = p.params(&segs("shop/north/items/42")).unwrap();
        assert_eq!(params.get("shop"), Some("north"));
        assert_eq!(params.get("id"), Some("42"));
        assert_eq!(params.get("nope"), None);
        assert_eq!(params.iter().count(), 2);
    }

    #[test]
    fn network_prefix() {
        let p = TopicPath::parse("math/add").unwrap().in_network("home");
        assert_eq!(p.to_string(), "home:math/add");
        let p = TopicPath::parse("lab:math/add").unwrap().in_network("home");
        assert_eq!(p.network(), Some("lab"));
    }
}
