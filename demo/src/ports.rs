//! The loopback ports a stack listens on: the documented ones, or free ones for tests that run
//! side by side, in one process or in several.

use std::net::TcpListener;

/// The ports the stack listens on, all on 127.0.0.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// Envoy's ingress: where clients connect.
    pub envoy: u16,
    /// Envoy's admin interface.
    pub envoy_admin: u16,
    /// cognito-authz gRPC (Check, health, reflection, diagnostics).
    pub authz: u16,
    /// cognito-authz admin HTTP (metrics, health).
    pub authz_admin: u16,
    /// cognito-authz's HTTP ext_authz listener (used by the HTTP flavour).
    pub authz_http: u16,
    /// The front end (its own origin, as the bootcamp's React app).
    pub frontend: u16,
    /// The demo app.
    pub app: u16,
    /// The Cognito emulator.
    pub cognito: u16,
}

impl Ports {
    /// The documented ports, the ones `envoy/envoy.yaml` names.
    pub const DOCUMENTED: Ports = Ports {
        envoy: 8080,
        envoy_admin: 9901,
        authz: 9001,
        authz_admin: 9002,
        authz_http: 9003,
        frontend: 3000,
        app: 8000,
        cognito: 5000,
    };

    /// Eight free loopback ports, below the ephemeral range and never twice in one process (for
    /// tests running side by side).
    pub fn ephemeral() -> std::io::Result<Ports> {
        let p = pick_ports(8)?;
        Ok(Ports {
            envoy: p[0],
            envoy_admin: p[1],
            authz: p[2],
            authz_admin: p[3],
            app: p[4],
            cognito: p[5],
            authz_http: p[6],
            frontend: p[7],
        })
    }
}

/// `n` loopback ports nothing listens on, for processes the stack starts later. They come from
/// below Linux's ephemeral range (32768 and up), so no outgoing connection can take one in the
/// meantime. Each is reserved for the life of this process by an exclusive lock on a file named
/// after it in the system's temporary folder: stacks started side by side, by threads of one test
/// binary or by test processes running in parallel, never pick the same port. The operating
/// system drops the locks when the process ends, however it ends, so nothing goes stale.
pub(crate) fn pick_ports(n: usize) -> std::io::Result<Vec<u16>> {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::Mutex;
    // The held locks; a second lock of the same file from this process fails like another's.
    static RESERVED: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("cruddur-demo-ports");
    std::fs::create_dir_all(&dir)?;
    let mut reserved = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
    let random = std::collections::hash_map::RandomState::new();
    let mut ports = Vec::with_capacity(n);
    for attempt in 0u64..100_000 {
        if ports.len() == n {
            break;
        }
        let mut hasher = random.build_hasher();
        hasher.write_u64(attempt);
        let port = 20_000 + (hasher.finish() % 12_000) as u16;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(port.to_string()))?;
        if lock.try_lock().is_err() || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        reserved.push(lock);
        ports.push(port);
    }
    if ports.len() < n {
        return Err(std::io::Error::other("no free loopback port below 32000"));
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserved_port_is_locked_against_every_other_picker() {
        let ports = pick_ports(4).unwrap();
        let dir = std::env::temp_dir().join("cruddur-demo-ports");
        for port in ports {
            // Another open file description of the same file: what another process would get.
            let other = std::fs::File::options()
                .write(true)
                .open(dir.join(port.to_string()))
                .unwrap();
            assert!(other.try_lock().is_err(), "port {port} is not reserved");
        }
    }

    #[test]
    fn ephemeral_ports_are_distinct() {
        let a = Ports::ephemeral().unwrap();
        let b = Ports::ephemeral().unwrap();
        let all = [a, b]
            .iter()
            .flat_map(|p| {
                [
                    p.envoy,
                    p.envoy_admin,
                    p.authz,
                    p.authz_admin,
                    p.authz_http,
                    p.frontend,
                    p.app,
                    p.cognito,
                ]
            })
            .collect::<std::collections::HashSet<_>>();
        assert_eq!(all.len(), 16);
    }
}
