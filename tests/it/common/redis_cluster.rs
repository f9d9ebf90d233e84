//! A throwaway Redis Cluster for the tests: six Debian `redis-server` processes on loopback
//! (three primaries, three replicas) made with `redis-cli --cluster create`, an ACL user with a
//! password on each (as ElastiCache's RBAC has), killed and removed when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The ACL user the nodes know; the default user is off, as on ElastiCache with RBAC.
pub const USER: &str = "authz";
/// Its password: the tests check that it never shows.
pub const PASSWORD: &str = "cluster-s3cret-pw";
/// How long a node may be silent before its replica takes over: short, so a failover in a test
/// takes a second or two.
const NODE_TIMEOUT_MS: u64 = 1000;

const SERVER: &str = "/usr/bin/redis-server";
const CLI: &str = "/usr/bin/redis-cli";

/// One node: its client port and process (none once killed).
struct Node {
    port: u16,
    child: Option<Child>,
}

/// A running six-node cluster.
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
    /// Over TLS only (`--port 0`, TLS between nodes too): the CA that signed every node's
    /// certificate.
    tls_ca: Option<PathBuf>,
}

/// Twelve free loopback ports (each node's client port and cluster bus port), reserved for this
/// process as the stacks' are: below the ephemeral range, never picked twice side by side.
fn free_ports() -> Vec<u16> {
    (0..2)
        .flat_map(|_| {
            let p = cruddur_demo::stack::Ports::ephemeral().expect("free loopback ports");
            [
                p.envoy,
                p.envoy_admin,
                p.authz,
                p.authz_admin,
                p.app,
                p.cognito,
            ]
        })
        .collect()
}

impl RedisCluster {
    /// Starts six nodes, makes them a cluster with one replica per primary, and waits until
    /// every node says `cluster_state:ok`. Panics, naming the fix, when redis-server or
    /// redis-cli is missing.
    pub fn start(name: &str) -> RedisCluster {
        RedisCluster::start_with(name, false)
    }

    /// [`RedisCluster::start`], speaking TLS only, to clients and between nodes, as
    /// ElastiCache Serverless and MemoryDB do; [`RedisCluster::ca`] signed the nodes'
    /// certificates (for 127.0.0.1).
    pub fn start_tls(name: &str) -> RedisCluster {
        RedisCluster::start_with(name, true)
    }

    /// The CA file a TLS cluster's clients trust.
    pub fn ca(&self) -> &std::path::Path {
        self.tls_ca.as_deref().expect("a TLS cluster")
    }

    fn start_with(name: &str, tls: bool) -> RedisCluster {
        for tool in [SERVER, CLI] {
            assert!(
                std::path::Path::new(tool).exists(),
                "{tool} is missing: install Debian's redis-server and redis-tools (scripts/test does)"
            );
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-cluster-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ports = free_ports();
        let tls_ca = tls.then(|| {
            super::write_pki(&dir.join("tls"));
            dir.join("tls/ca.pem")
        });
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            dir,
            tls_ca,
        };
        for pair in ports.chunks(2) {
            let (port, bus) = (pair[0], pair[1]);
            let child = cluster.spawn(port, bus);
            cluster.nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        for node in &cluster.nodes {
            cluster.wait_answers(node.port);
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new(CLI)
            .args(["--user", USER, "--pass", PASSWORD, "--no-auth-warning"])
            .args(cluster.tls_args())
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_ok(Duration::from_secs(20));
        cluster.wait_replicas_synced(Duration::from_secs(20));
        cluster
    }

    /// Waits until every live replica holds its primary's data and follows it.
    pub fn wait_replicas_synced(&self, within: Duration) {
        let deadline = Instant::now() + within;
        for port in self.live_ports() {
            loop {
                let info = self.cli(port, &["INFO", "replication"]);
                if info.contains("role:master") || info.contains("master_link_status:up") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "replica {port} never synced: {info}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// redis-cli's flags for a TLS cluster (none otherwise).
    fn tls_args(&self) -> Vec<String> {
        match &self.tls_ca {
            Some(ca) => vec!["--tls".into(), "--cacert".into(), ca.display().to_string()],
            None => Vec::new(),
        }
    }

    fn spawn(&self, port: u16, bus: u16) -> Child {
        let log = std::fs::File::create(self.dir.join(format!("{port}.log"))).unwrap();
        let mut command = Command::new(SERVER);
        match &self.tls_ca {
            Some(ca) => {
                let tls = ca.parent().unwrap();
                command
                    .args(["--port", "0", "--tls-port", &port.to_string()])
                    .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
                    .arg("--tls-cert-file")
                    .arg(tls.join("server.pem"))
                    .arg("--tls-key-file")
                    .arg(tls.join("server-key.pem"))
                    .arg("--tls-ca-cert-file")
                    .arg(ca)
                    .args(["--tls-auth-clients", "no"]);
            }
            None => {
                command.args(["--port", &port.to_string()]);
            }
        }
        command
            .args(["--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
            ])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
            .args(["--dir", self.dir.to_str().unwrap()])
            .args(["--save", "", "--appendonly", "no"])
            // A replica syncs at once (by default a primary waits 5 s for more to sync with).
            .args(["--repl-diskless-sync-delay", "0"])
            // The default user off, one ACL user with a password: replicas sign in as it too.
            .args(["--user", "default", "off"])
            .args([
                "--user",
                USER,
                "on",
                &format!(">{PASSWORD}"),
                "~*",
                "&*",
                "+@all",
            ])
            .args(["--masteruser", USER, "--masterauth", PASSWORD])
            .stdout(Stdio::from(log))
            .spawn()
            .expect("redis-server")
    }

    /// `redis-cli` against one node, signed in; its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new(CLI)
            .args(["-p", &port.to_string(), "--user", USER, "--pass", PASSWORD])
            .arg("--no-auth-warning")
            .args(self.tls_args())
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `redis-cli` against every live node (an ACL change, say); their outputs.
    pub fn cli_all(&self, args: &[&str]) -> Vec<String> {
        self.live_ports()
            .into_iter()
            .map(|port| self.cli(port, args))
            .collect()
    }

    fn wait_answers(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.cli(port, &["PING"]).contains("PONG") {
            assert!(
                Instant::now() < deadline,
                "redis node {port} never answered"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every live node says `cluster_state:ok`.
    pub fn wait_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        for port in self.live_ports() {
            while !self
                .cli(port, &["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
            {
                assert!(
                    Instant::now() < deadline,
                    "node {port} never said cluster_state:ok: {}",
                    self.cli(port, &["CLUSTER", "NODES"])
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// The seed nodes as `AUTHZ_REDIS_URL` takes them: two of the six, comma-separated, with
    /// the ACL user and password.
    pub fn url(&self) -> String {
        self.nodes[..2]
            .iter()
            .map(|n| {
                let scheme = if self.tls_ca.is_some() {
                    "rediss"
                } else {
                    "redis"
                };
                format!("{scheme}://{USER}:{PASSWORD}@127.0.0.1:{}", n.port)
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the live primary serving `key`'s slot, as a live node sees the cluster.
    pub fn primary_of(&self, key: &str) -> u16 {
        self.try_primary_of(key).unwrap_or_else(|| {
            let nodes = self.cli(self.live_ports()[0], &["CLUSTER", "NODES"]);
            panic!("no live primary serves {key}: {nodes}")
        })
    }

    fn try_primary_of(&self, key: &str) -> Option<u16> {
        let port = self.live_ports()[0];
        let slot: u16 = self
            .cli(port, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap();
        let nodes = self.cli(port, &["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                match (from.parse::<u16>(), to.parse::<u16>()) {
                    (Ok(from), Ok(to)) => (from..=to).contains(&slot),
                    _ => false,
                }
            });
            if serves {
                let address = fields[1].split('@').next().unwrap();
                return address.rsplit(':').next().unwrap().parse().ok();
            }
        }
        None
    }

    /// Moves `key`'s slot, with its keys, from its primary to the primary on `to`, as a
    /// resharding does (`CLUSTER SETSLOT ... IMPORTING/MIGRATING`, `MIGRATE`, `SETSLOT ... NODE`
    /// on every primary), and waits until every live node routes the slot there.
    pub fn move_slot(&self, key: &str, to: u16) {
        let from = self.primary_of(key);
        assert_ne!(from, to, "the slot is on {to} already");
        let slot = self
            .cli(from, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .to_string();
        let id = |port: u16| self.cli(port, &["CLUSTER", "MYID"]).trim().to_string();
        let (from_id, to_id) = (id(from), id(to));
        let ok = |answer: String| assert!(answer.contains("OK"), "{answer}");
        ok(self.cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]));
        ok(self.cli(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]));
        loop {
            let keys = self.cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let to_port = to.to_string();
            let mut args = vec![
                "MIGRATE",
                "127.0.0.1",
                &to_port,
                "",
                "0",
                "5000",
                "AUTH2",
                USER,
                PASSWORD,
                "KEYS",
            ];
            args.extend(keys);
            ok(self.cli(from, &args));
        }
        ok(self.cli(to, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]));
        ok(self.cli(from, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]));
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.try_primary_of(key) != Some(to)
            || self.live_ports().iter().any(|&port| {
                // `[slot->-id]` migrating, `[slot-<-id]` importing.
                let nodes = self.cli(port, &["CLUSTER", "NODES"]);
                nodes.contains("->-") || nodes.contains("-<-")
            })
        {
            assert!(Instant::now() < deadline, "the slot move never spread");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The port of a live replica of the primary on `primary`.
    pub fn replica_of(&self, primary: u16) -> u16 {
        let id = self.cli(primary, &["CLUSTER", "MYID"]).trim().to_string();
        let replicas = self.cli(primary, &["CLUSTER", "REPLICAS", &id]);
        let address = replicas
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no replica of {primary}: {replicas}"));
        let address = address.split('@').next().unwrap();
        address.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// The ports of the live primaries.
    pub fn primaries(&self) -> Vec<u16> {
        self.live_ports()
            .into_iter()
            .filter(|&port| self.cli(port, &["ROLE"]).starts_with("master"))
            .collect()
    }

    /// Kills the node on `port` (as a crash would).
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until another primary than `old` serves `key`'s slot and the cluster is ok; the
    /// new primary's port.
    pub fn wait_promoted(&self, key: &str, old: u16, within: Duration) -> u16 {
        let deadline = Instant::now() + within;
        loop {
            let nodes = self.cli(self.live_ports()[0], &["CLUSTER", "NODES"]);
            if let Some(port) = self.try_primary_of(key).filter(|p| *p != old) {
                self.wait_ok(deadline.saturating_duration_since(Instant::now()));
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "no replica took over from {old}: {nodes}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
