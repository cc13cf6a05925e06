//! Picking a free TCP port for a new cluster.

use std::net::{Ipv4Addr, TcpListener};

use crate::error::LocalPgError;

/// A port nothing on 127.0.0.1 is bound to right now, from the kernel's ephemeral range.
///
/// The ephemeral range (32768+ on Linux) never includes 5432, so a distro-started cluster is
/// never disturbed. Someone may take the port before the server binds it; the caller retries.
pub(crate) fn free_port() -> Result<u16, LocalPgError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(LocalPgError::io("find a free TCP port on 127.0.0.1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_is_bindable_and_not_5432() {
        let port = free_port().unwrap();
        assert_ne!(port, 5432);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }
}
