//! Contexts that condition a transition: what is known when a caller makes its next call.
//!
//! A [`ContextKind`] turns a [`CallContext`] into a key, or declines when what it needs is
//! unknown. The graph keeps one distribution per (context kind, key, caller) and, when
//! predicting, backs off from the most specific kind with enough history to first order, in
//! the manner of PPM. Kinds are trait objects so new ones can be measured without touching
//! the graph.

use crate::ids::{LabelId, TaskId};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::sync::Arc;

/// What a caller called just before the call being predicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Prev {
    /// Not known (a later step of a predicted path).
    Unknown,
    /// The call is the caller invocation's first.
    Start,
    /// The caller's previous call went to this task.
    After(TaskId),
}

/// Everything a context kind may look at for one call (or the end of a caller's calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CallContext {
    /// The calling task.
    pub caller: TaskId,
    /// The caller invocation's previous call.
    pub prev: Prev,
    /// The request's route: the operation of the first call below the entry.
    pub route: Option<LabelId>,
    /// The task that called the caller.
    pub grand_caller: Option<TaskId>,
    /// The caller invocation's operation (the handler it runs), when known.
    pub caller_operation: Option<LabelId>,
}

impl CallContext {
    /// A context that knows only the caller.
    pub fn first_order(caller: TaskId) -> CallContext {
        CallContext {
            caller,
            prev: Prev::Unknown,
            route: None,
            grand_caller: None,
            caller_operation: None,
        }
    }
}

/// One way of conditioning transitions. `key` returns `None` when the context cannot be
/// formed (its inputs are unknown); the caller is always part of the table key, so a kind
/// encodes only what it adds.
pub trait ContextKind: Debug + Send + Sync {
    /// A short stable name, shown in predictions and reports.
    fn name(&self) -> &'static str;
    /// The key for `context`, or `None` when this kind does not apply.
    fn key(&self, context: &CallContext) -> Option<u64>;
    /// Whether the key includes the call order. Such a kind predicts the caller's next call
    /// in sequence, so "no further call" after some calls is an outcome it learns; any other
    /// kind (and first order) predicts one call of the caller, and its chain end is the
    /// caller making no call at all.
    fn uses_call_order(&self) -> bool {
        false
    }
}

const START_KEY: u64 = 1 << 32;

fn prev_key(prev: Prev) -> Option<u64> {
    match prev {
        Prev::Unknown => None,
        Prev::Start => Some(START_KEY),
        Prev::After(task) => Some(u64::from(task.0)),
    }
}

/// The previous call made by the same caller invocation (call order inside a caller).
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOrder;

impl ContextKind for CallOrder {
    fn uses_call_order(&self) -> bool {
        true
    }
    fn name(&self) -> &'static str {
        "call-order"
    }
    fn key(&self, context: &CallContext) -> Option<u64> {
        prev_key(context.prev)
    }
}

/// The request's route.
#[derive(Debug, Clone, Copy, Default)]
pub struct Route;

impl ContextKind for Route {
    fn name(&self) -> &'static str {
        "route"
    }
    fn key(&self, context: &CallContext) -> Option<u64> {
        context.route.map(|route| u64::from(route.0))
    }
}

/// The route and the call order together.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteCallOrder;

impl ContextKind for RouteCallOrder {
    fn uses_call_order(&self) -> bool {
        true
    }
    fn name(&self) -> &'static str {
        "route+call-order"
    }
    fn key(&self, context: &CallContext) -> Option<u64> {
        let route = context.route?;
        let prev = prev_key(context.prev)?;
        Some((u64::from(route.0) << 33) | prev)
    }
}

/// The caller's caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrandCaller;

impl ContextKind for GrandCaller {
    fn name(&self) -> &'static str {
        "grand-caller"
    }
    fn key(&self, context: &CallContext) -> Option<u64> {
        context.grand_caller.map(|task| u64::from(task.0))
    }
}

/// The call order and the caller's caller together.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrandCallerCallOrder;

impl ContextKind for GrandCallerCallOrder {
    fn uses_call_order(&self) -> bool {
        true
    }
    fn name(&self) -> &'static str {
        "grand-caller+call-order"
    }
    fn key(&self, context: &CallContext) -> Option<u64> {
        let grand = context.grand_caller?;
        let prev = prev_key(context.prev)?;
        Some((u64::from(grand.0) << 33) | prev)
    }
}

/// The caller invocation's operation and the call order together.
#[derive(Debug, Clone, Copy, Default)]
pub struct OperationCallOrder;

impl ContextKind for OperationCallOrder {
    fn uses_call_order(&self) -> bool {
        true
    }
    fn name(&self) -> &'static str {
        "operation+call-order"
    }
    fn key(&self, context: &CallContext) -> Option<u64> {
        let operation = context.caller_operation?;
        let prev = prev_key(context.prev)?;
        Some((u64::from(operation.0) << 33) | prev)
    }
}

/// The route, the caller invocation's operation and the call order together.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteOperationCallOrder;

impl ContextKind for RouteOperationCallOrder {
    fn uses_call_order(&self) -> bool {
        true
    }
    fn name(&self) -> &'static str {
        "route+operation+call-order"
    }
    fn key(&self, context: &CallContext) -> Option<u64> {
        let route = context.route?;
        let operation = context.caller_operation?;
        let prev = prev_key(context.prev)?;
        // Route and operation ids share 31 bits (2^15 each would be too few for big
        // graphs), so mix them; a collision only merges two rare contexts.
        let mixed = (u64::from(route.0).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ u64::from(operation.0))
            & 0x7FFF_FFFF;
        Some((mixed << 33) | prev)
    }
}

/// Looks a context kind up by its name (for command-line selection).
pub fn context_kind_by_name(name: &str) -> Option<Arc<dyn ContextKind>> {
    let kind: Arc<dyn ContextKind> = match name {
        "call-order" => Arc::new(CallOrder),
        "route" => Arc::new(Route),
        "route+call-order" => Arc::new(RouteCallOrder),
        "grand-caller" => Arc::new(GrandCaller),
        "grand-caller+call-order" => Arc::new(GrandCallerCallOrder),
        "operation+call-order" => Arc::new(OperationCallOrder),
        "route+operation+call-order" => Arc::new(RouteOperationCallOrder),
        _ => return None,
    };
    Some(kind)
}

/// The names [`context_kind_by_name`] knows.
pub const CONTEXT_KIND_NAMES: &[&str] = &[
    "route+operation+call-order",
    "operation+call-order",
    "route+call-order",
    "call-order",
    "route",
    "grand-caller+call-order",
    "grand-caller",
];

/// The default backoff order, most specific first: route with call order, call order, route.
pub fn default_context_kinds() -> Vec<Arc<dyn ContextKind>> {
    vec![
        Arc::new(RouteCallOrder),
        Arc::new(CallOrder),
        Arc::new(Route),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_decline_when_inputs_are_unknown() {
        let context = CallContext::first_order(TaskId(3));
        assert_eq!(CallOrder.key(&context), None);
        assert_eq!(Route.key(&context), None);
        assert_eq!(RouteCallOrder.key(&context), None);
        let known = CallContext {
            prev: Prev::Start,
            route: Some(LabelId(2)),
            ..context
        };
        assert_eq!(CallOrder.key(&known), Some(START_KEY));
        assert_ne!(
            RouteCallOrder.key(&known),
            RouteCallOrder.key(&CallContext {
                prev: Prev::After(TaskId(0)),
                ..known
            })
        );
    }

    #[test]
    fn every_listed_name_resolves() {
        for name in CONTEXT_KIND_NAMES {
            assert_eq!(context_kind_by_name(name).unwrap().name(), *name);
        }
        assert!(context_kind_by_name("nope").is_none());
    }
}
