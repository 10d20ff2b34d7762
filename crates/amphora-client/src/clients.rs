//! The clients of every amphora a controller drives, keyed by amphora id:
//! each keeps its own connections, and a client is replaced when its
//! amphora's address changes (a failover gives the id a new VM).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use crate::{Client, ClientError, Credentials, Timeouts};

#[derive(Debug)]
pub struct Clients {
    credentials: Credentials,
    timeouts: Timeouts,
    by_amphora: Mutex<HashMap<String, Client>>,
}

impl Clients {
    pub fn new(credentials: Credentials, timeouts: Timeouts) -> Self {
        Self { credentials, timeouts, by_amphora: Mutex::new(HashMap::new()) }
    }

    /// The client of `amphora_id` at `addr`, made on first use.
    pub fn get(&self, amphora_id: &str, addr: SocketAddr) -> Result<Client, ClientError> {
        let mut clients = self.by_amphora.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(amphora_id).filter(|c| c.addr() == addr) {
            return Ok(client.clone());
        }
        let client = Client::new(amphora_id, addr, &self.credentials, self.timeouts)?;
        clients.insert(amphora_id.to_owned(), client.clone());
        Ok(client)
    }

    /// Drops an amphora's client and its connections (the amphora was
    /// deleted).
    pub fn forget(&self, amphora_id: &str) {
        self.by_amphora.lock().unwrap_or_else(|e| e.into_inner()).remove(amphora_id);
    }

    pub fn len(&self) -> usize {
        self.by_amphora.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
