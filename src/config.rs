//! Provider configuration, read from `mysmshook.providers` and `mysmshook.provider_chains` once
//! per batch on the backend thread. SPI only here and in queue.rs / intake.rs.

use crate::job::Channel;
use crate::providers::{self, Provider};
use pgrx::prelude::*;
use pgrx::JsonB;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone)]
pub struct NamedProvider {
    pub name: String,
    pub provider: Arc<dyn Provider>,
}

/// Ordered provider chain per channel.
pub type Chains = HashMap<String, Vec<NamedProvider>>;

pub fn load_chains() -> Result<Chains, pgrx::spi::Error> {
    const QUERY: &str = "select c.channel, p.name, p.kind, p.settings
                           from mysmshook.provider_chains c
                           join mysmshook.providers p on p.name = c.provider
                          where p.enabled
                          order by c.channel, c.position";
    Spi::connect(|client| {
        let mut built: HashMap<String, Arc<dyn Provider>> = HashMap::new();
        let mut chains = Chains::new();
        for row in client.select(QUERY, None, &[])? {
            let channel: String = row.get(1)?.unwrap_or_default();
            let name: String = row.get(2)?.unwrap_or_default();
            let kind: String = row.get(3)?.unwrap_or_default();
            let settings = row.get::<JsonB>(4)?.map(|j| j.0).unwrap_or_default();
            let provider = built
                .entry(name.clone())
                .or_insert_with(|| providers::build_or_unusable(&name, &kind, &settings))
                .clone();
            chains
                .entry(channel)
                .or_default()
                .push(NamedProvider { name, provider });
        }
        Ok(chains)
    })
}

pub fn chain_for(chains: &Chains, channel: Channel) -> Vec<NamedProvider> {
    chains.get(channel.as_str()).cloned().unwrap_or_default()
}
