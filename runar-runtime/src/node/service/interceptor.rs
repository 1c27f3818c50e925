//! Interceptors: async hooks that see (and may change or refuse) a call before it is served.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;

use super::Caller;
use crate::error::Result;
use crate::metadata::Metadata;

/// A call as an [`Interceptor`] sees it: the action's path, who calls, the metadata and the
/// deadline. An interceptor returns it (with metadata added or changed) to let the call go on.
#[derive(Debug, Clone)]
pub struct Call {
    pub(crate) path: Arc<str>,
    pub(crate) caller: Caller,
    pub(crate) metadata: Metadata,
    pub(crate) deadline: Instant,
}

impl Call {
    /// The action's path (without network), e.g. `inventory/items/7`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Who makes the call: [`Caller::Local`] on the calling side, the peer on the serving side
    /// of a remote call.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The call's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The call's metadata, to add or change entries.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// When the caller stops waiting.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// An async hook on calls. An *outgoing* interceptor (per node with
/// [`NodeConfig::with_outgoing_interceptor`], per client with `client.with_interceptor`, per call
/// with [`RequestOptions::with_interceptor`]) runs before a request leaves this node or reaches a
/// local handler; an *incoming* one ([`NodeConfig::with_incoming_interceptor`]) runs before the
/// handler, for local and remote callers. Either may add metadata, or refuse the call with an
/// [`Error`](crate::Error) that the caller receives, code and message.
///
/// Any `Fn(Call) -> impl Future<Output = Result<Call>>` closure is an interceptor:
///
/// ```
/// use runar_runtime::{Call, Error, NodeConfig};
/// let config = NodeConfig::new("api", "shop")
///     .with_outgoing_interceptor(|mut call: Call| async move {
///         call.metadata_mut().insert("authorization", "Bearer t0ken")?;
///         Ok(call)
///     })
///     .with_incoming_interceptor(|call: Call| async move {
///         match call.metadata().get("authorization") {
///             Some(_) => Ok(call),
///             None => Err(Error::permission_denied("no token")),
///         }
///     });
/// ```
///
/// [`NodeConfig::with_outgoing_interceptor`]: crate::NodeConfig::with_outgoing_interceptor
/// [`NodeConfig::with_incoming_interceptor`]: crate::NodeConfig::with_incoming_interceptor
/// [`RequestOptions::with_interceptor`]: crate::RequestOptions::with_interceptor
pub trait Interceptor: Send + Sync + 'static {
    /// Sees the call; returns it to go on, or an error to refuse it.
    fn intercept(&self, call: Call) -> BoxFuture<'static, Result<Call>>;
}

impl<F, Fut> Interceptor for F
where
    F: Fn(Call) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Call>> + Send + 'static,
{
    fn intercept(&self, call: Call) -> BoxFuture<'static, Result<Call>> {
        Box::pin(self(call))
    }
}

/// An ordered list of interceptors; empty (and free) by default.
#[derive(Clone, Default)]
pub(crate) struct Interceptors(Option<Arc<[Arc<dyn Interceptor>]>>);

impl Interceptors {
    /// True when there is none.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// This list with `interceptor` appended.
    pub(crate) fn with(&self, interceptor: Arc<dyn Interceptor>) -> Interceptors {
        let mut all: Vec<Arc<dyn Interceptor>> = self.iter().cloned().collect();
        all.push(interceptor);
        Interceptors(Some(all.into()))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<dyn Interceptor>> {
        self.0.iter().flat_map(|all| all.iter())
    }

    /// Runs the interceptors in order; the first refusal ends the call.
    pub(crate) async fn run(&self, mut call: Call) -> Result<Call> {
        for interceptor in self.iter() {
            call = interceptor.intercept(call).await?;
        }
        Ok(call)
    }
}

impl fmt::Debug for Interceptors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} interceptor(s)", self.iter().count())
    }
}

impl PartialEq for Interceptors {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Interceptors {}
