//! Topic paths and the trie that routes them.
//!
//! A path is `[network:]seg/seg/...`. In a pattern (a registered action or a subscription):
//! - `*` matches exactly one segment;
//! - `>` matches **one or more** trailing segments and must be last (`math/>` matches
//!   `math/add` and `math/a/b`, but not `math` itself — as in NATS);
//! - `{name}` matches one segment and hands its value to the handler as a path parameter.
//!
//! Requests and publishes use concrete paths (no `*`, `>` or `{…}`).
//!
//! A node bounds every path it is given or sent by length and depth (`PathLimits`, set from
//! [`NodeConfig::max_path_len`](crate::NodeConfig::max_path_len) and
//! [`max_path_depth`](crate::NodeConfig::max_path_depth)); nothing in this module recurses on
//! a path, so even an unchecked path costs heap, not stack.

mod path;
mod trie;

pub(crate) use path::{
    DEFAULT_MAX_PATH_DEPTH, DEFAULT_MAX_PATH_LEN, PathLimits, in_network, split_concrete,
    with_segments,
};
pub use path::{PathError, PathParams, Segment, TopicPath, split_network};
pub use trie::PathTrie;
