//! Where a stage keeps its network: loaded for one shape, kept while the next request needs the
//! same shape (a staged job reuses it instead of loading it per request), dropped before
//! another loads, so one network of a kind is in memory at a time.

use super::events::Run;
use crate::error::{Result, SdError};

pub struct Slot<K, N> {
    network: &'static str,
    loaded: Option<(K, N)>,
    /// The last load that failed: a request that needs the same network fails at once with
    /// its error instead of paying for the load again.
    failed: Option<(K, SdError)>,
}

impl<K: PartialEq, N> Slot<K, N> {
    pub fn new(network: &'static str) -> Self {
        Slot { network, loaded: None, failed: None }
    }

    /// The network for `key`, loaded by `load` when the slot holds another (which is dropped
    /// first). Also returns the seconds this call spent loading (0 when it was held already).
    pub fn get(&mut self, key: K, run: &mut Run, load: impl FnOnce(&K) -> Result<N>) -> Result<(&N, f64)> {
        if let Some((failed_key, error)) = &self.failed {
            if *failed_key == key {
                return Err(error.clone());
            }
        }
        let mut seconds = 0.0;
        if !self.loaded.as_ref().is_some_and(|(held, _)| *held == key) {
            drop(self.loaded.take());
            match run.load(self.network, || load(&key)) {
                Ok((network, load_seconds)) => {
                    self.loaded = Some((key, network));
                    seconds = load_seconds;
                }
                Err(e) => {
                    self.failed = Some((key, e.clone()));
                    return Err(e);
                }
            }
        }
        let (_, network) = self.loaded.as_ref().expect("loaded above");
        Ok((network, seconds))
    }
}
