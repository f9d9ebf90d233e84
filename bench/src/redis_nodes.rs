//! One Debian `redis-server` and a six-node Redis Cluster (three primaries, three replicas,
//! `redis-cli --cluster create`) on loopback, for the benches that compare the two.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cognito_authz::shared::RedisTarget;

/// The processes started here, killed on the way out.
pub struct Processes(pub Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn redis_server(dir: &std::path::Path, port: u16, cluster_bus: Option<u16>) -> Child {
    let mut command = Command::new("/usr/bin/redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir)
        .args(["--repl-diskless-sync-delay", "0"]);
    if let Some(bus) = cluster_bus {
        command
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
            ])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")]);
    }
    command
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (Debian's redis-server package)")
}

pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("/usr/bin/redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (Debian's redis-tools package)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One Redis and a six-node cluster; their targets.
pub fn start(dir: &std::path::Path, processes: &mut Processes) -> (RedisTarget, RedisTarget) {
    let single = free_port();
    processes.0.push(redis_server(dir, single, None));
    wait_until("redis answers", || cli(single, &["PING"]).contains("PONG"));
    let nodes: Vec<u16> = (0..6).map(|_| free_port()).collect();
    for &port in &nodes {
        let node_dir = dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).unwrap();
        processes
            .0
            .push(redis_server(&node_dir, port, Some(free_port())));
    }
    for &port in &nodes {
        wait_until("a node answers", || cli(port, &["PING"]).contains("PONG"));
    }
    let addresses: Vec<String> = nodes.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let created = Command::new("/usr/bin/redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addresses)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .output()
        .expect("redis-cli");
    assert!(
        created.status.success(),
        "redis-cli --cluster create failed"
    );
    for &port in &nodes {
        wait_until("cluster_state:ok", || {
            cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
        });
        wait_until("replicas synced", || {
            let info = cli(port, &["INFO", "replication"]);
            info.contains("role:master") || info.contains("master_link_status:up")
        });
    }
    (
        RedisTarget::from(format!("redis://127.0.0.1:{single}/").as_str()),
        RedisTarget {
            urls: vec![format!("redis://127.0.0.1:{}", nodes[0])],
            cluster: true,
        },
    )
}

/// Empties every key of `target` (in a cluster, of every primary).
pub fn flush_all(target: &RedisTarget) {
    let address = target.urls[0]
        .trim_start_matches("redis://")
        .trim_end_matches('/');
    let port: u16 = address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a loopback port");
    if target.cluster {
        let flushed = Command::new("/usr/bin/redis-cli")
            .args(["--cluster", "call", address, "FLUSHALL"])
            .output()
            .expect("redis-cli");
        assert!(flushed.status.success(), "redis-cli --cluster call failed");
    } else {
        assert!(cli(port, &["FLUSHALL"]).contains("OK"), "FLUSHALL failed");
    }
}
