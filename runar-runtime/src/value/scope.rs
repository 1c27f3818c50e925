//! The context a value's encode or decode runs in, for the codecs of sealed fields
//! (`crate::seal`): a value bound for a peer, or received from one, carries its node's seal
//! scope; a conversion inside one node runs in *local* mode.
//!
//! This module only keeps the current scope in a thread-local while a value encodes or decodes
//! (synchronously, so it never spans an `.await`); what a scope does is the seal module's.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::sync::Arc;

/// Something a value's encode or decode runs inside: the node's seal scope.
pub(crate) trait Scope: Send + Sync + 'static {
    /// The scope as `Any`, for the codec that knows its type.
    fn as_any(&self) -> &dyn Any;
    /// Called when an encode or a decode enters the scope (per-message state starts afresh).
    fn enter(&self);
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<dyn Scope>>> = const { RefCell::new(None) };
    static LOCAL: Cell<bool> = const { Cell::new(false) };
}

/// Restores the previous scope when dropped (also on a panic).
struct Restore(Option<Arc<dyn Scope>>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|current| *current.borrow_mut() = previous);
    }
}

/// Runs `f` inside `scope`.
pub(crate) fn within<R>(scope: &Arc<dyn Scope>, f: impl FnOnce() -> R) -> R {
    let previous = CURRENT.with(|current| current.borrow_mut().replace(scope.clone()));
    let _restore = Restore(previous);
    scope.enter();
    f()
}

/// The scope the current encode or decode runs in, if any.
pub(crate) fn current() -> Option<Arc<dyn Scope>> {
    CURRENT.with(|current| current.borrow().clone())
}

/// Restores local mode's previous state when dropped.
struct RestoreLocal(bool);

impl Drop for RestoreLocal {
    fn drop(&mut self) {
        LOCAL.with(|local| local.set(self.0));
    }
}

/// Runs `f` in local mode: an encode and decode inside one node (a value converted between two
/// Rust types of one schema), where sealed fields stay open.
pub(crate) fn locally<R>(f: impl FnOnce() -> R) -> R {
    let previous = LOCAL.with(|local| local.replace(true));
    let _restore = RestoreLocal(previous);
    f()
}

/// True inside [`locally`].
pub(crate) fn is_local() -> bool {
    LOCAL.with(Cell::get)
}
