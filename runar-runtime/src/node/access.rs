//! Access policies on the node: installing them per network, checking calls, subscriptions and
//! events against them, and leaving out of what a peer is told what it may not use.
//!
//! Without a policy a network allows everything, and the request and event paths pay one
//! branch (`NodeInner::policed`) for this module.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Node;
use crate::error::{Error, Result};
use crate::identity::NodeId;
use crate::lock::{read, write};
use crate::network::Offer;
use crate::network::log_limit::warn_limited;
use crate::node::service::CallKind;
use crate::policy::{Access, Enforced, Policy, RuleStats, Who};
use crate::routing::TopicPath;

impl Node {
    /// Sets who may do what in `network` (one of the node's networks), replacing its policy:
    /// calls and events from then on are checked against it, peers' subscriptions are checked
    /// again (one now denied gets nothing more; one now allowed starts receiving), and
    /// connected peers are told what they may now call and subscribe to; this returns once
    /// they acknowledged it (or the announce timeout passed). [`Policy::allow_all`] is every
    /// network's policy until one is set.
    ///
    /// Fails with `InvalidArgument` for a network the node is not in, a pattern that does not
    /// parse (or names a network), or a group the policy does not define.
    pub async fn set_policy(&self, network: &str, policy: Policy) -> Result<()> {
        let Some(network) = self.networks().into_iter().find(|n| n == network) else {
            return Err(Error::invalid_argument(format!(
                "`{network}` is not a network of this node"
            )));
        };
        let enforced = Enforced::new(policy, self.inner.config.path_limits())?;
        tracing::info!(node = %self.name(), %network, policy = %enforced.policy(), "access policy set");
        {
            let mut policies = write(&self.inner.policies);
            if enforced.policy().is_allow_all() && enforced.policy().rules().is_empty() {
                policies.remove(network.as_str());
            } else {
                policies.insert(network.as_str().into(), Arc::new(enforced));
            }
            self.inner
                .policed
                .store(!policies.is_empty(), Ordering::Release);
        }
        self.recheck_subscriptions(&network);
        self.announce_in(&network).await;
        Ok(())
    }

    /// The decisions of `network`'s policy so far, per rule and then its default's; `None`
    /// while the network has no policy (everything is allowed, and nothing counted).
    pub fn policy_stats(&self, network: &str) -> Option<Vec<RuleStats>> {
        self.policy_of(network).map(|p| p.stats())
    }

    /// Logs, once at start, each network that allows everything.
    pub(super) fn log_policies(&self) {
        for network in self.networks() {
            if self.policy_of(&network).is_none() {
                tracing::info!(node = %self.name(), %network, "no access policy: every admitted peer may call, publish and subscribe to everything (Node::set_policy restricts it)");
            }
        }
    }

    /// The policy of `network`, if one is set.
    pub(super) fn policy_of(&self, network: &str) -> Option<Arc<Enforced>> {
        if !self.inner.policed.load(Ordering::Acquire) {
            return None;
        }
        read(&self.inner.policies).get(network).cloned()
    }

    /// Checks that `who` (a peer, or `None` for a local caller) may `access` the concrete
    /// `path` in `network`. Local callers are checked only when the policy names them. A
    /// denial is counted, logged (rate-limited) and returned as `PermissionDenied` naming the
    /// rule. Call only when `NodeInner::policed` is set.
    pub(super) fn check_access(
        &self,
        network: &str,
        who: Who<'_>,
        access: Access,
        path: &str,
    ) -> Result<()> {
        let Some(policy) = self.policy_of(network) else {
            return Ok(());
        };
        if who.is_none() && !policy.names_local() {
            return Ok(());
        }
        let segments: Vec<&str> = path.split('/').collect();
        policy
            .decide(who, access, &segments)
            .map_err(|denied| self.denied(network, who, access, path, &denied.0))
    }

    /// The error (and the rate-limited log line) of a denial.
    fn denied(&self, network: &str, who: Who<'_>, access: Access, path: &str, rule: &str) -> Error {
        let who = who.map_or_else(|| "a local caller".to_owned(), |id| format!("node {id}"));
        let path: String = path.chars().take(128).collect();
        warn_limited!(node = %self.name(), %network, %who, %access, %path, %rule, "access denied");
        Error::permission_denied(format!(
            "{who} may not {access} `{path}` in network `{network}`: denied by {rule}"
        ))
    }

    /// Whether `peer` may subscribe to `pattern` in `network` (counted; a denial logged).
    pub(super) fn may_subscribe(&self, network: &str, peer: &NodeId, pattern: &TopicPath) -> bool {
        let Some(policy) = self.policy_of(network) else {
            return true;
        };
        match policy.decide_all(Some(peer), Access::Subscribe, pattern) {
            Ok(()) => true,
            Err(denied) => {
                let _ = self.denied(
                    network,
                    Some(peer),
                    Access::Subscribe,
                    pattern.path(),
                    &denied.0,
                );
                false
            }
        }
    }

    /// Checks a local subscription to `pattern` in `network`, when the policy names local
    /// callers.
    pub(super) fn check_local_subscribe(&self, network: &str, pattern: &TopicPath) -> Result<()> {
        let Some(policy) = self.policy_of(network) else {
            return Ok(());
        };
        if !policy.names_local() {
            return Ok(());
        }
        policy
            .decide_all(None, Access::Subscribe, pattern)
            .map_err(|denied| {
                self.denied(network, None, Access::Subscribe, pattern.path(), &denied.0)
            })
    }

    /// Narrows what this node offers in `network` to what `peer` may use: the actions it may
    /// call (a streaming one: stream; a service with none left is left out), the schema and description only where it
    /// may introspect, and the subscriptions it may publish to.
    pub(super) fn offer_for(&self, network: &str, peer: &NodeId, mut offer: Offer) -> Offer {
        let Some(policy) = self.policy_of(network) else {
            return offer;
        };
        let limits = self.inner.config.path_limits();
        let registry = &self.inner.registry;
        let may = |access, path: &str| {
            TopicPath::parse_within(path, limits)
                .is_ok_and(|p| policy.may_some(Some(peer), access, &p))
        };
        offer.services.retain_mut(|service| {
            let had = service.actions.len();
            // A unary action needs `Call`, a streaming one `Stream`.
            service.actions.retain(|action| {
                let streams = registry
                    .local_kind(network, action)
                    .is_some_and(|kind| kind != CallKind::Unary);
                may(
                    if streams {
                        Access::Stream
                    } else {
                        Access::Call
                    },
                    action,
                )
            });
            if !may(Access::Introspect, &service.path)
                && !may(Access::Introspect, &format!("{}/>", service.path))
            {
                service.schema = Default::default();
                service.description.clear();
            }
            had == 0 || !service.actions.is_empty()
        });
        offer
            .subscriptions
            .retain(|s| may(Access::Publish, &s.pattern));
        offer
    }
}
