//! Access policies: who may call, publish, subscribe, stream and introspect what, per network.
//!
//! A [`Policy`] is a default (allow all, or deny all) and rules, each allowing or denying one
//! [`Access`] to a [`Subject`] on the resources a Runar path pattern names (`*` one segment,
//! `>` the rest, `{name}` templates as `*`). **Deny wins**: a request is denied when any deny
//! rule matches it, allowed when an allow rule does, and otherwise gets the default.
//!
//! ```
//! use runar_runtime::NodeId;
//! use runar_runtime::policy::{Access, Policy, Subject};
//! # fn ops() -> NodeId { "aaaaaaaaaaaaaaaaaaaaaaaaaa".parse().unwrap() }
//! let policy = Policy::deny_all()
//!     .allow(Subject::any_peer(), Access::Call, "inventory/get_item")
//!     .allow(Subject::nodes([ops()]), Access::Call, "inventory/>")
//!     .allow(Subject::any_peer(), Access::Subscribe, "inventory/stock/>");
//! assert_eq!(policy.rules().len(), 3);
//! ```
//!
//! A node enforces its policy for each network (`Node::set_policy`); without one, a network
//! allows everything. Identities are the peers' verified [`NodeId`]s (from TLS), never what a
//! peer says.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::identity::NodeId;
use crate::routing::{PathLimits, Segment, TopicPath};

/// What a rule governs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Access {
    /// Calling an action on this node (checked on this node before the handler runs).
    Call,
    /// Publishing to this node's subscribers (a peer's events, checked before delivery).
    Publish,
    /// Subscribing to this node's events (a peer's subscriptions, checked when announced).
    Subscribe,
    /// Streaming calls (server, client and bidirectional streaming actions), checked on the
    /// serving node when the call starts. A peer is told of a streaming action only where it
    /// may stream it (of a unary one where it may call it).
    Stream,
    /// Seeing a service's schema and description in what this node tells its peers.
    Introspect,
}

impl Access {
    /// The access in one word, as in rule descriptions: `call`, `publish`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Call => "call",
            Access::Publish => "publish",
            Access::Subscribe => "subscribe",
            Access::Stream => "stream",
            Access::Introspect => "introspect",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a rule is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject(SubjectKind);

#[derive(Debug, Clone, PartialEq, Eq)]
enum SubjectKind {
    Local,
    AnyPeer,
    Nodes(BTreeSet<NodeId>),
    Group(String),
}

impl Subject {
    /// Callers on this node itself (its own services, its user). A policy that names local
    /// callers is checked for local calls and publishes too.
    pub fn local() -> Subject {
        Subject(SubjectKind::Local)
    }

    /// Every peer (any node admitted to the network).
    pub fn any_peer() -> Subject {
        Subject(SubjectKind::AnyPeer)
    }

    /// The peers with these ids.
    pub fn nodes(ids: impl IntoIterator<Item = NodeId>) -> Subject {
        Subject(SubjectKind::Nodes(ids.into_iter().collect()))
    }

    /// The members of the group `name`, defined with [`Policy::with_group`].
    pub fn group(name: impl Into<String>) -> Subject {
        Subject(SubjectKind::Group(name.into()))
    }

    fn is_local(&self) -> bool {
        self.0 == SubjectKind::Local
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            SubjectKind::Local => f.write_str("local callers"),
            SubjectKind::AnyPeer => f.write_str("any peer"),
            SubjectKind::Nodes(ids) if ids.len() == 1 => {
                write!(
                    f,
                    "node {}",
                    ids.iter()
                        .next()
                        .map_or_else(String::new, ToString::to_string)
                )
            }
            SubjectKind::Nodes(ids) => write!(f, "{} nodes", ids.len()),
            SubjectKind::Group(name) => write!(f, "group `{name}`"),
        }
    }
}

/// Whether a rule allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

/// One rule of a [`Policy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    effect: Effect,
    subject: Subject,
    access: Access,
    pattern: String,
}

impl Rule {
    /// True for an allow rule, false for a deny rule.
    pub fn allows(&self) -> bool {
        self.effect == Effect::Allow
    }

    /// Who the rule is about.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// What it governs.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The resources it covers: a path pattern.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let effect = match self.effect {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        };
        write!(
            f,
            "{effect} {} {} `{}`",
            self.subject, self.access, self.pattern
        )
    }
}

/// Who may do what in one network: a default and rules, deny winning over allow.
///
/// Build one with [`Policy::allow_all`] or [`Policy::deny_all`] and the `allow`/`deny`
/// methods; install it with `Node::set_policy`, which checks the patterns and groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    default: Effect,
    rules: Vec<Rule>,
    groups: BTreeMap<String, BTreeSet<NodeId>>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::allow_all()
    }
}

impl Policy {
    /// Everything is allowed unless a rule denies it: a network's policy until one is set.
    pub fn allow_all() -> Policy {
        Policy {
            default: Effect::Allow,
            rules: Vec::new(),
            groups: BTreeMap::new(),
        }
    }

    /// Everything is denied unless a rule allows it (and no rule denies it).
    pub fn deny_all() -> Policy {
        Policy {
            default: Effect::Deny,
            ..Policy::allow_all()
        }
    }

    /// Allows `access` to `subject` on what `pattern` names (unless a deny rule matches too).
    pub fn allow(self, subject: Subject, access: Access, pattern: impl Into<String>) -> Policy {
        self.rule(Effect::Allow, subject, access, pattern.into())
    }

    /// Denies `access` to `subject` on what `pattern` names, whatever the allow rules say.
    pub fn deny(self, subject: Subject, access: Access, pattern: impl Into<String>) -> Policy {
        self.rule(Effect::Deny, subject, access, pattern.into())
    }

    /// Names a group of node ids, for [`Subject::group`].
    pub fn with_group(
        mut self,
        name: impl Into<String>,
        ids: impl IntoIterator<Item = NodeId>,
    ) -> Policy {
        self.groups.insert(name.into(), ids.into_iter().collect());
        self
    }

    /// The rules, in the order they were added.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// True when nothing is denied: the default allows and there is no deny rule.
    pub fn is_allow_all(&self) -> bool {
        self.default == Effect::Allow && self.rules.iter().all(Rule::allows)
    }

    fn rule(mut self, effect: Effect, subject: Subject, access: Access, pattern: String) -> Policy {
        self.rules.push(Rule {
            effect,
            subject,
            access,
            pattern,
        });
        self
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.default {
            Effect::Allow => f.write_str("allow all")?,
            Effect::Deny => f.write_str("deny all")?,
        }
        for rule in &self.rules {
            write!(f, ", {rule}")?;
        }
        Ok(())
    }
}

/// How often one rule (or the default) decided, in [`Node::policy_stats`](crate::Node).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuleStats {
    /// The rule, as in `allow any peer call `inventory/>``, or `default: deny all`.
    pub rule: String,
    /// Requests it allowed.
    pub allowed: u64,
    /// Requests it denied.
    pub denied: u64,
}

/// Who asks: a peer by its verified id, or `None` for a local caller.
pub(crate) type Who<'a> = Option<&'a NodeId>;

/// A rule ready to match, with its counters.
struct Compiled {
    rule: Rule,
    pattern: TopicPath,
    decided: AtomicU64,
}

/// A [`Policy`] checked and ready to enforce, counting its decisions.
pub(crate) struct Enforced {
    policy: Policy,
    rules: Vec<Compiled>,
    /// Decisions of the default: (allowed, denied).
    default_allowed: AtomicU64,
    default_denied: AtomicU64,
    /// Some rule names local callers: local calls and publishes are checked too.
    names_local: bool,
}

/// A denial: the rule (or default) that decided, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denied(pub(crate) String);

impl Enforced {
    /// Checks `policy`'s patterns (within `limits`, without a `network:` prefix) and groups.
    pub(crate) fn new(policy: Policy, limits: PathLimits) -> Result<Enforced> {
        let mut rules = Vec::with_capacity(policy.rules.len());
        for (n, rule) in policy.rules.iter().enumerate() {
            let invalid = |why: String| {
                Error::invalid_argument(format!(
                    "policy rule {} ({rule}): {why}",
                    n.saturating_add(1)
                ))
            };
            let pattern = TopicPath::parse_within(&rule.pattern, limits)
                .map_err(|e| invalid(e.to_string()))?;
            if pattern.network().is_some() {
                return Err(invalid(
                    "a policy is set per network: drop the `network:` prefix".to_owned(),
                ));
            }
            if let SubjectKind::Group(name) = &rule.subject.0
                && !policy.groups.contains_key(name)
            {
                return Err(invalid(format!(
                    "no group `{name}`: define it with Policy::with_group"
                )));
            }
            rules.push(Compiled {
                rule: rule.clone(),
                pattern,
                decided: AtomicU64::new(0),
            });
        }
        Ok(Enforced {
            names_local: policy.rules.iter().any(|r| r.subject.is_local()),
            policy,
            rules,
            default_allowed: AtomicU64::new(0),
            default_denied: AtomicU64::new(0),
        })
    }

    /// The policy as it was given.
    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    /// True when local callers are to be checked.
    pub(crate) fn names_local(&self) -> bool {
        self.names_local
    }

    fn applies(&self, rule: &Compiled, who: Who<'_>, access: Access) -> bool {
        rule.rule.access == access
            && match (&rule.rule.subject.0, who) {
                (SubjectKind::Local, None) => true,
                (SubjectKind::AnyPeer, Some(_)) => true,
                (SubjectKind::Nodes(ids), Some(id)) => ids.contains(id),
                (SubjectKind::Group(name), Some(id)) => {
                    self.policy.groups.get(name).is_some_and(|g| g.contains(id))
                }
                _ => false,
            }
    }

    /// Decides `access` by `who` to the concrete path `segments`, and counts the decision.
    pub(crate) fn decide(
        &self,
        who: Who<'_>,
        access: Access,
        segments: &[&str],
    ) -> Result<(), Denied> {
        self.decide_by(
            who,
            access,
            |p| p.matches(segments),
            |p| p.matches(segments),
        )
    }

    /// Decides `access` by `who` to everything `pattern` names (a subscription): allowed when
    /// an allow rule (or the default) covers all of it and no deny rule touches any of it.
    pub(crate) fn decide_all(
        &self,
        who: Who<'_>,
        access: Access,
        pattern: &TopicPath,
    ) -> Result<(), Denied> {
        let sub = pattern.segments();
        self.decide_by(
            who,
            access,
            |p| overlaps(p.segments(), sub),
            |p| covers(p.segments(), sub),
        )
    }

    /// Whether `who` may have `access` to some of what `pattern` names (what a peer is told it
    /// may call): no deny rule covers all of it, and an allow rule (or the default) touches
    /// it. Not counted: it decides what is shown, not a request.
    pub(crate) fn may_some(&self, who: Who<'_>, access: Access, pattern: &TopicPath) -> bool {
        let path = pattern.segments();
        let relevant = || self.rules.iter().filter(|r| self.applies(r, who, access));
        if relevant().any(|r| !r.rule.allows() && covers(r.pattern.segments(), path)) {
            return false;
        }
        self.policy.default == Effect::Allow
            || relevant().any(|r| r.rule.allows() && overlaps(r.pattern.segments(), path))
    }

    /// Deny wins: the first applicable deny rule that `denies` matches decides; else the first
    /// allow rule that `allows` matches; else the default.
    fn decide_by(
        &self,
        who: Who<'_>,
        access: Access,
        denies: impl Fn(&TopicPath) -> bool,
        allows: impl Fn(&TopicPath) -> bool,
    ) -> Result<(), Denied> {
        let mut allowed_by = None;
        for (n, rule) in self.rules.iter().enumerate() {
            if !self.applies(rule, who, access) {
                continue;
            }
            if rule.rule.allows() {
                if allowed_by.is_none() && allows(&rule.pattern) {
                    allowed_by = Some(rule);
                }
            } else if denies(&rule.pattern) {
                rule.decided.fetch_add(1, Ordering::Relaxed);
                return Err(Denied(format!(
                    "rule {} ({})",
                    n.saturating_add(1),
                    rule.rule
                )));
            }
        }
        match (allowed_by, self.policy.default) {
            (Some(rule), _) => {
                rule.decided.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            (None, Effect::Allow) => {
                self.default_allowed.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            (None, Effect::Deny) => {
                self.default_denied.fetch_add(1, Ordering::Relaxed);
                Err(Denied("the default (deny all)".to_owned()))
            }
        }
    }

    /// The decisions counted so far, per rule, then the default's.
    pub(crate) fn stats(&self) -> Vec<RuleStats> {
        let mut stats: Vec<RuleStats> = self
            .rules
            .iter()
            .map(|r| {
                let n = r.decided.load(Ordering::Relaxed);
                let (allowed, denied) = if r.rule.allows() { (n, 0) } else { (0, n) };
                RuleStats {
                    rule: r.rule.to_string(),
                    allowed,
                    denied,
                }
            })
            .collect();
        let default = match self.policy.default {
            Effect::Allow => "default: allow all",
            Effect::Deny => "default: deny all",
        };
        stats.push(RuleStats {
            rule: default.to_owned(),
            allowed: self.default_allowed.load(Ordering::Relaxed),
            denied: self.default_denied.load(Ordering::Relaxed),
        });
        stats
    }
}

/// True when every concrete path `inner` matches, `outer` matches too.
fn covers(outer: &[Segment], inner: &[Segment]) -> bool {
    for (i, seg) in outer.iter().enumerate() {
        let Some(other) = inner.get(i) else {
            return false;
        };
        match seg {
            // `>` takes one or more segments: whatever `inner` has from here (at least one).
            Segment::Rest => return true,
            Segment::Single | Segment::Param(_) => {
                if matches!(other, Segment::Rest) {
                    return false;
                }
            }
            Segment::Literal(lit) => {
                if !matches!(other, Segment::Literal(o) if o == lit) {
                    return false;
                }
            }
        }
    }
    inner.len() == outer.len()
}

/// True when some concrete path matches both `a` and `b`.
fn overlaps(a: &[Segment], b: &[Segment]) -> bool {
    for (i, x) in a.iter().enumerate() {
        let Some(y) = b.get(i) else {
            return false;
        };
        match (x, y) {
            (Segment::Rest, _) | (_, Segment::Rest) => return true,
            (Segment::Literal(l), Segment::Literal(m)) if l != m => return false,
            _ => {}
        }
    }
    a.len() == b.len()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::identity::NodeKeypair;
    use crate::routing::{DEFAULT_MAX_PATH_DEPTH, DEFAULT_MAX_PATH_LEN};

    fn limits() -> PathLimits {
        PathLimits {
            max_len: DEFAULT_MAX_PATH_LEN,
            max_depth: DEFAULT_MAX_PATH_DEPTH,
        }
    }

    fn p(s: &str) -> TopicPath {
        TopicPath::parse(s).unwrap()
    }

    #[test]
    fn patterns_cover_and_overlap() {
        let covers_ = |a: &str, b: &str| covers(p(a).segments(), p(b).segments());
        let overlaps_ = |a: &str, b: &str| overlaps(p(a).segments(), p(b).segments());
        assert!(covers_("a/>", "a/b/>"));
        assert!(covers_("a/>", "a/*"));
        assert!(!covers_("a/b/>", "a/>"));
        assert!(!covers_("a/*", "a/>"));
        assert!(covers_("a/*", "a/{x}"));
        assert!(!covers_("a/b", "a/*"));
        assert!(overlaps_("a/b", "a/*"));
        assert!(overlaps_("a/b/>", "a/>"));
        assert!(!overlaps_("a/b/>", "a/c/>"));
        assert!(!overlaps_("a/b", "a/b/c"));
        assert!(!overlaps_("a/>", "a"));
    }

    #[test]
    fn deny_wins_and_decisions_are_counted() {
        let ops = NodeKeypair::generate().unwrap().node_id();
        let other = NodeKeypair::generate().unwrap().node_id();
        let policy = Policy::deny_all()
            .allow(Subject::any_peer(), Access::Call, "inv/get")
            .allow(Subject::group("ops"), Access::Call, "inv/>")
            .deny(Subject::any_peer(), Access::Call, "inv/secret")
            .with_group("ops", [ops]);
        let enforced = Enforced::new(policy, limits()).unwrap();
        let call = |who: &NodeId, path: &str| {
            let segments: Vec<&str> = path.split('/').collect();
            enforced.decide(Some(who), Access::Call, &segments)
        };
        assert!(call(&other, "inv/get").is_ok());
        assert!(call(&ops, "inv/restock").is_ok());
        assert!(call(&other, "inv/restock").is_err());
        let denied = call(&ops, "inv/secret").unwrap_err();
        assert!(denied.0.contains("rule 3"), "{denied:?}");
        assert!(
            enforced
                .decide(None, Access::Call, &["inv", "get"])
                .is_err()
        );
        assert!(!enforced.names_local());
        let stats = enforced.stats();
        assert_eq!(
            (stats[0].allowed, stats[1].allowed, stats[2].denied),
            (1, 1, 1)
        );
        assert_eq!(stats[3].denied, 2);
        // Subscriptions: covered by an allow, touched by no deny.
        let policy =
            Policy::allow_all().deny(Subject::any_peer(), Access::Subscribe, "inv/secret/>");
        let enforced = Enforced::new(policy, limits()).unwrap();
        assert!(
            enforced
                .decide_all(Some(&ops), Access::Subscribe, &p("inv/stock/>"))
                .is_ok()
        );
        assert!(
            enforced
                .decide_all(Some(&ops), Access::Subscribe, &p("inv/>"))
                .is_err()
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        for policy in [
            Policy::deny_all().allow(Subject::any_peer(), Access::Call, "net:inv/get"),
            Policy::deny_all().allow(Subject::any_peer(), Access::Call, "inv//get"),
            Policy::deny_all().allow(Subject::group("nobody"), Access::Call, "inv/get"),
        ] {
            assert!(Enforced::new(policy, limits()).is_err());
        }
    }
}
