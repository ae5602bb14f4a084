//! The behavior registry: behavior names from the flow file map to factories;
//! instances are built on first use and released when the last [`BehaviorLease`] is dropped.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::{CommandBehavior, DynTaskBehavior, NoopBehavior, TaskBehavior};

type Factory = Arc<dyn Fn() -> Arc<dyn DynTaskBehavior> + Send + Sync>;

/// Maps behavior names to factories and hands out shared, lazily built instances.
///
/// Registration happens at start-up (`&mut self`); [`acquire`](Self::acquire) is `&self` and
/// thread-safe, so one registry (in an `Arc`) serves all of an executor's shards. While any
/// lease of a name is alive every acquirer shares one instance; after the last lease is dropped
/// the instance is dropped too, and the next acquire builds a fresh one. Factories run under
/// the registry's lock, so keep them cheap and do expensive set-up in the first step.
#[derive(Default)]
pub struct BehaviorRegistry {
    entries: BTreeMap<String, Entry>,
}

struct Entry {
    factory: Factory,
    /// The live instance, if any lease holds it.
    live: Mutex<Weak<dyn DynTaskBehavior>>,
}

/// An error from the [`BehaviorRegistry`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No behavior of that name is registered.
    #[error("unknown behavior `{name}`; this executor hosts: {}", known.join(", "))]
    UnknownBehavior {
        /// The name asked for.
        name: String,
        /// The names that are registered, sorted.
        known: Vec<String>,
    },
    /// A behavior of that name is already registered.
    #[error("behavior `{name}` is registered twice; names must be unique")]
    Duplicate {
        /// The name registered twice.
        name: String,
    },
}

impl BehaviorRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        BehaviorRegistry::default()
    }

    /// A registry with the built-in behaviors: `noop` ([`NoopBehavior`]) and `command`
    /// ([`CommandBehavior`]).
    pub fn with_builtins() -> Self {
        let mut registry = BehaviorRegistry::new();
        registry.entries.insert(NoopBehavior::NAME.to_owned(), Entry::new(NoopBehavior::default));
        registry
            .entries
            .insert(CommandBehavior::NAME.to_owned(), Entry::new(CommandBehavior::default));
        registry
    }

    /// Registers `factory` under `name` (e.g. `fund.confirm_trades`). The factory is not
    /// called until the first [`acquire`](Self::acquire).
    pub fn register<B, F>(
        &mut self,
        name: impl Into<String>,
        factory: F,
    ) -> Result<(), RegistryError>
    where
        B: TaskBehavior,
        F: Fn() -> B + Send + Sync + 'static,
    {
        let name = name.into();
        if self.entries.contains_key(&name) {
            return Err(RegistryError::Duplicate { name });
        }
        self.entries.insert(name, Entry::new(factory));
        Ok(())
    }

    /// The instance of behavior `name`, built now if no lease holds one.
    pub fn acquire(&self, name: &str) -> Result<BehaviorLease, RegistryError> {
        let entry = self.entries.get_key_value(name);
        let Some((name, entry)) = entry else {
            return Err(RegistryError::UnknownBehavior {
                name: name.to_owned(),
                known: self.entries.keys().cloned().collect(),
            });
        };
        // A poisoned lock only means a factory panicked; the Weak inside is still valid.
        let mut live = entry.live.lock().unwrap_or_else(PoisonError::into_inner);
        let instance = match live.upgrade() {
            Some(instance) => instance,
            None => {
                let instance = (entry.factory)();
                *live = Arc::downgrade(&instance);
                instance
            }
        };
        Ok(BehaviorLease { name: name.clone(), instance })
    }

    /// The names of every registered behavior, sorted (what an executor advertises).
    pub fn names(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Whether an instance of `name` is alive now (some lease holds it).
    pub fn is_loaded(&self, name: &str) -> bool {
        self.entries.get(name).is_some_and(|entry| {
            entry.live.lock().unwrap_or_else(PoisonError::into_inner).strong_count() > 0
        })
    }
}

impl Entry {
    fn new<B, F>(factory: F) -> Self
    where
        B: TaskBehavior,
        F: Fn() -> B + Send + Sync + 'static,
    {
        let factory: Factory = Arc::new(move || Arc::new(factory()) as Arc<dyn DynTaskBehavior>);
        // `Weak::new` needs a sized type; an unsizing coercion makes it a dangling dyn Weak.
        let live: Weak<dyn DynTaskBehavior> = Weak::<NoopBehavior>::new();
        Entry { factory, live: Mutex::new(live) }
    }
}

impl fmt::Debug for BehaviorRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BehaviorRegistry").field("names", &self.names()).finish()
    }
}

/// A shared handle on a behavior instance; the instance lives while any lease of it does.
///
/// Dereferences to [`DynTaskBehavior`], so it can be passed to [`run_shard`](super::run_shard)
/// as `&*lease`.
#[derive(Clone)]
pub struct BehaviorLease {
    name: String,
    instance: Arc<dyn DynTaskBehavior>,
}

impl BehaviorLease {
    /// The registered name the lease was acquired under.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Deref for BehaviorLease {
    type Target = dyn DynTaskBehavior;

    fn deref(&self) -> &Self::Target {
        &*self.instance
    }
}

impl fmt::Debug for BehaviorLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BehaviorLease").field("name", &self.name).finish_non_exhaustive()
    }
}
