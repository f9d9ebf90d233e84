//! The shipped Envoy configs, each generated from `envoy/envoy.yaml` by editing it as parsed
//! YAML: a flavour names what it changes (a cluster's endpoint, the ext_authz service, the CORS
//! origins), never the text around it. The parse is lossless, so the comments and layout of
//! everything a flavour leaves alone ship as written, and a native config laid out differently
//! yields the same flavours. An element a flavour needs and cannot find is a panic naming it.
//!
//! A test regenerates every shipped flavour and compares it byte for byte with the committed file
//! (`cargo run -p cruddur-demo --bin cruddur-demo -- --print-…-envoy` rewrites one).

use std::str::FromStr;

use yaml_edit::{Document, Mapping, ScalarValue, Sequence, YamlNode};

use crate::error::StackError;
use crate::ports::Ports;

/// A native Envoy config, parsed losslessly and edited in place.
pub struct EnvoyConfig {
    doc: Document,
}

/// `text` as YAML, or a panic: the snippets below and the native config are ours.
fn parsed(what: &str, text: &str) -> Document {
    Document::from_str(text).unwrap_or_else(|e| panic!("{what} is not YAML: {e}"))
}

/// The mapping a snippet holds.
fn snippet_mapping(text: &str) -> Mapping {
    parsed("a flavour's snippet", text)
        .as_mapping()
        .expect("the snippet is a mapping")
}

fn scalar(node: &YamlNode) -> Option<String> {
    node.as_scalar().map(|s| s.as_string())
}

fn mapping(parent: &Mapping, key: &str) -> Mapping {
    parent.get_mapping(key).unwrap_or_else(|| {
        panic!("the Envoy config has no mapping `{key}` where a flavour edits it")
    })
}

fn sequence(parent: &Mapping, key: &str) -> Sequence {
    parent
        .get_sequence(key)
        .unwrap_or_else(|| panic!("the Envoy config has no list `{key}` where a flavour edits it"))
}

/// The entries of `list` that are mappings.
fn mappings(list: &Sequence) -> Vec<Mapping> {
    list.values()
        .filter_map(|v| v.as_mapping().cloned())
        .collect()
}

/// The one entry of `list` whose `name` is `name`.
fn named(list: &Sequence, name: &str) -> Mapping {
    let found: Vec<Mapping> = mappings(list)
        .into_iter()
        .filter(|m| m.get("name").and_then(|n| scalar(&n)).as_deref() == Some(name))
        .collect();
    match <[Mapping; 1]>::try_from(found) {
        Ok([one]) => one,
        Err(found) => panic!(
            "the Envoy config names `{name}` {} times where a flavour edits it once",
            found.len()
        ),
    }
}

/// `parent[key]` set to `value`; `key` must already stand there, so an edit never adds a field
/// the native config lacks.
fn replace(parent: &Mapping, key: &str, value: impl yaml_edit::AsYaml) {
    assert!(
        parent.contains_key(key),
        "the Envoy config has no `{key}` where a flavour replaces it"
    );
    parent.set(key, value);
}

/// `key: value` inserted into `parent` after its `after` field, which must stand there.
fn insert_after(parent: &Mapping, after: &str, key: &str, value: impl yaml_edit::AsYaml) {
    assert!(
        !parent.contains_key(key),
        "the Envoy config already has the `{key}` a flavour adds"
    );
    assert!(
        parent.insert_after(after, key, value),
        "the Envoy config has no `{after}` where a flavour adds `{key}` after it"
    );
}

/// Every mapping in `node`, depth first.
fn all_mappings(node: &YamlNode, out: &mut Vec<Mapping>) {
    match node {
        YamlNode::Mapping(m) => {
            out.push(m.clone());
            for value in m.values() {
                all_mappings(&value, out);
            }
        }
        YamlNode::Sequence(s) => {
            for value in s.values() {
                all_mappings(&value, out);
            }
        }
        _ => {}
    }
}

/// The cluster name of cognito-authz and of the app in every flavour.
pub const AUTHZ_CLUSTER: &str = "cognito_authz";
const APP_CLUSTER: &str = "app";

impl EnvoyConfig {
    /// Parses a native config. Panics if it is not YAML with a mapping at the top.
    pub fn parse(text: &str) -> EnvoyConfig {
        let doc = parsed("the Envoy config", text);
        assert!(
            doc.as_mapping().is_some(),
            "the Envoy config is not a mapping"
        );
        EnvoyConfig { doc }
    }

    /// The config as text: the native text with this config's edits.
    pub fn text(&self) -> String {
        self.doc.to_string()
    }

    fn root(&self) -> Mapping {
        self.doc.as_mapping().expect("checked in parse")
    }

    fn static_resources(&self) -> Mapping {
        mapping(&self.root(), "static_resources")
    }

    /// A cluster by name.
    fn cluster(&self, name: &str) -> Mapping {
        named(&sequence(&self.static_resources(), "clusters"), name)
    }

    /// A cluster's endpoints, each `- endpoint: { address: … }`.
    fn lb_endpoints(&self, cluster: &str) -> Sequence {
        let assignment = mapping(&self.cluster(cluster), "load_assignment");
        let localities = mappings(&sequence(&assignment, "endpoints"));
        let [locality] = <[Mapping; 1]>::try_from(localities)
            .unwrap_or_else(|l| panic!("cluster `{cluster}` has {} localities, not one", l.len()));
        sequence(&locality, "lb_endpoints")
    }

    /// The `address` mapping of a cluster's one endpoint.
    fn endpoint_address(&self, cluster: &str) -> Mapping {
        let endpoints = mappings(&self.lb_endpoints(cluster));
        let [endpoint] = <[Mapping; 1]>::try_from(endpoints)
            .unwrap_or_else(|e| panic!("cluster `{cluster}` has {} endpoints, not one", e.len()));
        mapping(&mapping(&endpoint, "endpoint"), "address")
    }

    /// The `socket_address` of a cluster's one endpoint.
    fn endpoint_socket(&self, cluster: &str) -> Mapping {
        mapping(&self.endpoint_address(cluster), "socket_address")
    }

    fn ingress(&self) -> Mapping {
        named(&sequence(&self.static_resources(), "listeners"), "ingress")
    }

    /// The HTTP connection manager's `typed_config` on the ingress listener.
    fn connection_manager(&self) -> Mapping {
        let chains = mappings(&sequence(&self.ingress(), "filter_chains"));
        let [chain] = <[Mapping; 1]>::try_from(chains)
            .unwrap_or_else(|c| panic!("the ingress has {} filter chains, not one", c.len()));
        let filters = sequence(&chain, "filters");
        mapping(
            &named(&filters, "envoy.filters.network.http_connection_manager"),
            "typed_config",
        )
    }

    /// An HTTP filter's `typed_config`.
    fn http_filter(&self, name: &str) -> Mapping {
        mapping(
            &named(&sequence(&self.connection_manager(), "http_filters"), name),
            "typed_config",
        )
    }

    /// The one virtual host.
    fn virtual_host(&self) -> Mapping {
        let route_config = mapping(&self.connection_manager(), "route_config");
        let hosts = mappings(&sequence(&route_config, "virtual_hosts"));
        let [host] = <[Mapping; 1]>::try_from(hosts)
            .unwrap_or_else(|h| panic!("the route config has {} virtual hosts, not one", h.len()));
        host
    }

    /// The origins the virtual host's CORS policy allows.
    fn cors_origins(&self) -> Sequence {
        let per_filter = mapping(&self.virtual_host(), "typed_per_filter_config");
        sequence(
            &mapping(&per_filter, "envoy.filters.http.cors"),
            "allow_origin_string_match",
        )
    }

    /// The ingress listener opens to every interface (a container's network).
    pub fn listen_on_all_interfaces(&self) -> &Self {
        let address = mapping(&mapping(&self.ingress(), "address"), "socket_address");
        replace(&address, "address", "0.0.0.0");
        self
    }

    /// The CORS policy allows `origin` alone, instead of the demo's front-end origins.
    pub fn allow_only_origin(&self, origin: &str) -> &Self {
        let origins = self.cors_origins();
        assert!(!origins.is_empty(), "the CORS policy allows no origin");
        while origins.len() > 1 {
            origins.pop();
        }
        let entry = snippet_mapping(&format!("exact: {origin}  # your front end's origin"));
        origins.set(0, entry);
        self
    }

    /// A cluster finds its one endpoint by a DNS name (a compose service), on the same port.
    pub fn resolve_by_name(&self, cluster: &str, host: &str) -> &Self {
        replace(&self.cluster(cluster), "type", "STRICT_DNS");
        replace(&self.endpoint_socket(cluster), "address", host);
        self
    }

    /// cognito-authz's endpoint is the Unix socket at `path`.
    pub fn authz_over_pipe(&self, path: &str) -> &Self {
        let address = self.endpoint_address(AUTHZ_CLUSTER);
        let pipe = parsed("a pipe", &format!("{{ path: {path} }}"));
        insert_after(
            &address,
            "socket_address",
            "pipe",
            pipe.as_mapping().expect("a flow mapping"),
        );
        address.remove("socket_address");
        self
    }

    /// The ext_authz filter speaks Envoy's HTTP protocol to cognito-authz's HTTP listener at
    /// `port`, and the access log reads the decision, reason and sub from the `x-authz-*`
    /// headers of the check's answer (dynamic metadata), never from the client's request.
    pub fn over_http_protocol(&self, port: u16) -> &Self {
        let ext_authz = self.http_filter("envoy.filters.http.ext_authz");
        let service = snippet_mapping(&HTTP_SERVICE.replace("{port}", &port.to_string()));
        insert_after(&ext_authz, "grpc_service", "http_service", service);
        ext_authz.remove("grpc_service");
        replace(
            &self.endpoint_socket(AUTHZ_CLUSTER),
            "port_value",
            i64::from(port),
        );
        self.edit_access_log(&[
            ("ext_authz:decision)%", "ext_authz:x-authz-decision)%"),
            ("ext_authz:reason)%", "ext_authz:x-authz-reason)%"),
            ("ext_authz:sub)%", "ext_authz:x-authz-sub)%"),
        ]);
        self.without_context_extensions()
    }

    /// The access log's format string with each `(from, to)` replaced; `from` must stand once.
    fn edit_access_log(&self, edits: &[(&str, &str)]) {
        let loggers = mappings(&sequence(&self.connection_manager(), "access_log"));
        let [logger] = <[Mapping; 1]>::try_from(loggers)
            .unwrap_or_else(|l| panic!("the ingress has {} access logs, not one", l.len()));
        let source = mapping(
            &mapping(&mapping(&logger, "typed_config"), "log_format"),
            "text_format_source",
        );
        let mut format = source
            .get("inline_string")
            .and_then(|s| scalar(&s))
            .expect("the access log has an inline_string format");
        for (from, to) in edits {
            assert_eq!(
                format.matches(from).count(),
                1,
                "the access log format holds {from:?} other than once"
            );
            format = format.replace(from, to);
        }
        replace(&source, "inline_string", ScalarValue::double_quoted(format));
    }

    /// Drops each route's per-filter config that only sets ext_authz `context_extensions`
    /// (the HTTP protocol has none), keeping the ones that disable ext_authz.
    fn without_context_extensions(&self) -> &Self {
        let mut removed = 0;
        for route in mappings(&sequence(&self.virtual_host(), "routes")) {
            let Some(per_filter) = route.get_mapping("typed_per_filter_config") else {
                continue;
            };
            let sets_extensions = per_filter
                .get_mapping("envoy.filters.http.ext_authz")
                .is_some_and(|e| e.contains_key("check_settings"));
            if sets_extensions {
                assert_eq!(
                    per_filter.len(),
                    1,
                    "a route configures other filters beside ext_authz's context_extensions"
                );
                route.remove("typed_per_filter_config");
                removed += 1;
            }
        }
        assert!(
            removed > 0,
            "no route of the Envoy config sets context_extensions: update the HTTP flavour"
        );
        self
    }

    /// cognito-authz runs inside Envoy: the ext_authz filter becomes the dynamic-module filter
    /// (loaded by name through `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`; `serve`'s settings from its
    /// TOML and Envoy's environment), each route's `context_extensions` become that route's
    /// `DynamicModuleFilterPerRoute` config, and the authz cluster goes.
    pub fn in_process_module(&self) -> &Self {
        let filters = sequence(&self.connection_manager(), "http_filters");
        let index = mappings(&filters)
            .iter()
            .position(|f| {
                f.get("name").and_then(|n| scalar(&n)).as_deref()
                    == Some("envoy.filters.http.ext_authz")
            })
            .expect("the Envoy config has no ext_authz filter to replace");
        filters.set(index, snippet_mapping(MODULE_FILTER));
        let mut moved = 0;
        for route in mappings(&sequence(&self.virtual_host(), "routes")) {
            let Some(per_filter) = route.get_mapping("typed_per_filter_config") else {
                continue;
            };
            let Some(ext_authz) = per_filter.get_mapping("envoy.filters.http.ext_authz") else {
                continue;
            };
            let extensions = mapping(&mapping(&ext_authz, "check_settings"), "context_extensions");
            let mut per_route = MODULE_PER_ROUTE.to_string();
            for (key, value) in extensions.iter() {
                let (Some(key), Some(value)) = (scalar(&key), scalar(&value)) else {
                    panic!("a route's context_extensions hold a value that is not a string");
                };
                per_route.push_str(&format!("\n    {key}: {value}"));
            }
            insert_after(
                &per_filter,
                "envoy.filters.http.ext_authz",
                "envoy.filters.http.dynamic_modules",
                snippet_mapping(&per_route),
            );
            per_filter.remove("envoy.filters.http.ext_authz");
            moved += 1;
        }
        assert!(
            moved > 0,
            "no route of the Envoy config sets context_extensions"
        );
        let clusters = sequence(&self.static_resources(), "clusters");
        let index = mappings(&clusters)
            .iter()
            .position(|c| c.get("name").and_then(|n| scalar(&n)).as_deref() == Some(AUTHZ_CLUSTER))
            .expect("the Envoy config has no authz cluster");
        clusters.remove(index);
        let root = self.root();
        insert_after(
            &root,
            "overload_manager",
            "layered_runtime",
            snippet_mapping(MODULE_RUNTIME),
        );
        insert_after(
            &root,
            "layered_runtime",
            "stats_config",
            snippet_mapping(MODULE_STATS_CONFIG),
        );
        self
    }

    /// Envoy presents a client certificate to cognito-authz and accepts only its certificate.
    pub fn authz_over_mutual_tls(&self) -> &Self {
        let cluster = self.cluster(AUTHZ_CLUSTER);
        insert_after(
            &cluster,
            "connect_timeout",
            "transport_socket",
            snippet_mapping(UPSTREAM_TLS),
        );
        self
    }

    /// cognito-authz's cluster balances over `endpoints` (host, port), replacing its one.
    pub fn authz_endpoints(&self, endpoints: &[(&str, u16)]) -> &Self {
        let list = self.lb_endpoints(AUTHZ_CLUSTER);
        assert_eq!(
            list.len(),
            1,
            "the authz cluster has more than one endpoint"
        );
        assert!(!endpoints.is_empty(), "a cluster needs an endpoint");
        // Setting the first entry and appending the rest keeps the list's own layout.
        for (i, (host, port)) in endpoints.iter().enumerate() {
            let entry = snippet_mapping(&format!(
                "endpoint:\n  address:\n    socket_address: {{ address: {host}, port_value: {port} }}"
            ));
            if i == 0 {
                list.set(0, entry);
            } else {
                list.push(entry);
            }
        }
        self
    }

    /// Envoy also shows the check the client's `header` (one more `allowed_headers` entry), as
    /// a platform may be configured to (Envoy Gateway's `headersToExtAuth`, Istio's
    /// `includeRequestHeadersInCheck`).
    pub fn forward_to_check(&self, header: &str) -> &Self {
        let ext_authz = self.http_filter("envoy.filters.http.ext_authz");
        let patterns = sequence(&mapping(&ext_authz, "allowed_headers"), "patterns");
        patterns.push(snippet_mapping(&format!("exact: {header}")));
        self
    }

    /// Envoy asks each replica's gRPC health (`NOT_SERVING` without keys or while draining)
    /// and stops sending checks to one that fails, so a dead replica costs a few 503s, not half
    /// the traffic.
    pub fn with_health_checks(&self) -> &Self {
        let cluster = self.cluster(AUTHZ_CLUSTER);
        let checks = parsed("the health checks", REPLICA_HEALTH_CHECKS);
        insert_after(
            &cluster,
            "per_connection_buffer_limit_bytes",
            "health_checks",
            checks.as_sequence().expect("a list"),
        );
        self
    }

    /// Envoy traces every request with OpenTelemetry, sending its spans to the OTLP/gRPC
    /// collector at `host:port` and the trace context on to cognito-authz (gRPC metadata or
    /// request headers) and the app (`traceparent`). With `flush_ms`, Envoy sends its spans
    /// that often and one at a time (its default is every 5 s, five at a time).
    pub fn with_tracing(&self, host: &str, port: u16, flush_ms: Option<u64>) -> &Self {
        let manager = self.connection_manager();
        insert_after(&manager, "access_log", "tracing", snippet_mapping(TRACING));
        let clusters = sequence(&self.static_resources(), "clusters");
        clusters.push(snippet_mapping(
            &COLLECTOR_CLUSTER
                .replace("{host}", host)
                .replace("{port}", &port.to_string()),
        ));
        if let Some(ms) = flush_ms {
            assert!(
                !self.root().contains_key("layered_runtime"),
                "the Envoy config already has a layered_runtime"
            );
            self.root().set(
                "layered_runtime",
                snippet_mapping(&format!(
                    "layers:\n- name: tracing\n  static_layer:\n    tracing.opentelemetry.flush_interval_ms: {ms}\n    tracing.opentelemetry.min_flush_spans: 1"
                )),
            );
        }
        self
    }

    /// Every documented port replaced by the one in `ports`; fails when the config names one of
    /// Envoy's, the app's or cognito-authz's documented ports nowhere.
    pub fn render(&self, ports: Ports) -> Result<&Self, StackError> {
        let d = Ports::DOCUMENTED;
        let moves = [
            (d.envoy, ports.envoy),
            (d.envoy_admin, ports.envoy_admin),
            (d.app, ports.app),
            (d.authz, ports.authz),
            (d.authz_http, ports.authz_http),
        ];
        let mut moved = [false; 5];
        let mut found = Vec::new();
        all_mappings(&YamlNode::Mapping(self.root()), &mut found);
        for m in &found {
            let Some(port) = m.get("port_value").and_then(|p| p.to_i64()) else {
                continue;
            };
            if let Some(i) = moves.iter().position(|(from, _)| i64::from(*from) == port) {
                replace(m, "port_value", i64::from(moves[i].1));
                moved[i] = true;
            }
        }
        for (i, what) in ["Envoy's ingress", "Envoy's admin", "the app's"]
            .iter()
            .enumerate()
        {
            if !moved[i] {
                return Err(StackError(format!(
                    "the Envoy config names no {what} port ({}) to render",
                    moves[i].0
                )));
            }
        }
        // The in-process flavour has no cognito-authz to reach.
        let has_authz = mappings(&sequence(&self.static_resources(), "clusters"))
            .iter()
            .any(|c| c.get("name").and_then(|n| scalar(&n)).as_deref() == Some(AUTHZ_CLUSTER));
        if has_authz && !moved[3] && !moved[4] {
            return Err(StackError(
                "the Envoy config names no cognito-authz port to render".into(),
            ));
        }
        if let Ok(service) = self.http_service() {
            let uri = mapping(&service, "server_uri");
            replace(
                &uri,
                "uri",
                format!("http://127.0.0.1:{}", ports.authz_http).as_str(),
            );
        }
        // The front end's origin, which the CORS policy allows, moves with its port.
        let origins = self.cors_origins();
        for (i, entry) in mappings(&origins).into_iter().enumerate() {
            let exact = entry.get("exact").and_then(|e| scalar(&e));
            for host in ["127.0.0.1", "localhost"] {
                if exact.as_deref() == Some(&format!("http://{host}:{}", d.frontend)) {
                    let moved = format!("exact: http://{host}:{}", ports.frontend);
                    origins.set(i, snippet_mapping(&moved));
                }
            }
        }
        Ok(self)
    }

    /// The ext_authz filter's `http_service`, if it has one (the in-process flavour has no
    /// ext_authz filter at all).
    fn http_service(&self) -> Result<Mapping, ()> {
        let filters = mappings(&sequence(&self.connection_manager(), "http_filters"));
        let ext_authz = filters
            .iter()
            .find(|f| {
                f.get("name").and_then(|n| scalar(&n)).as_deref()
                    == Some("envoy.filters.http.ext_authz")
            })
            .ok_or(())?;
        mapping(ext_authz, "typed_config")
            .get_mapping("http_service")
            .ok_or(())
    }
}

/// The HTTP connection manager's tracer: the text the native config carries commented out.
pub const TRACING: &str = r#"provider:
  name: envoy.tracers.opentelemetry
  typed_config:
    "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
    grpc_service:
      envoy_grpc: { cluster_name: opentelemetry_collector }
      timeout: 0.25s
    service_name: envoy
"#;

/// The collector's cluster (OTLP over gRPC: HTTP/2).
pub const COLLECTOR_CLUSTER: &str = r#"name: opentelemetry_collector
type: STRICT_DNS
connect_timeout: 0.25s
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config:
      http2_protocol_options: {}
load_assignment:
  cluster_name: opentelemetry_collector
  endpoints:
  - lb_endpoints:
    - endpoint:
        address:
          socket_address: { address: {host}, port_value: {port} }
"#;

const HTTP_SERVICE: &str = r#"server_uri:
  uri: http://127.0.0.1:{port}
  cluster: cognito_authz
  timeout: 0.5s
authorization_response:
  # A 200 copies these onto the upstream request, replacing the client's copies;
  # cognito-authz lists the ones to drop in x-envoy-auth-headers-to-remove.
  allowed_upstream_headers:
    patterns:
    - prefix: x-cognito-
  # A denial passes its RFC 6750 challenge and JSON body on to the client.
  allowed_client_headers:
    patterns:
    - exact: www-authenticate
    - exact: content-type
    - exact: cache-control
    - exact: retry-after
  # The decision, reason and sub, for the access log: the check's answer, never the
  # client's own x-cognito-sub (on a denial, that one is whatever the client sent).
  dynamic_metadata_from_headers:
    patterns:
    - prefix: x-authz-
"#;

const UPSTREAM_TLS: &str = r#"name: envoy.transport_sockets.tls
typed_config:
  "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
  sni: cognito-authz
  common_tls_context:
    alpn_protocols: [h2]
    tls_certificates:
    - certificate_chain: { filename: /etc/cognito-authz/tls/envoy.pem }
      private_key: { filename: /etc/cognito-authz/tls/envoy-key.pem }
    validation_context:
      trusted_ca: { filename: /etc/cognito-authz/tls/ca.pem }
      match_typed_subject_alt_names:
      - san_type: DNS
        matcher: { exact: cognito-authz }
"#;

const REPLICA_HEALTH_CHECKS: &str = "- timeout: 0.25s
  interval: 0.5s
  unhealthy_threshold: 1
  healthy_threshold: 1
  grpc_health_check: { service_name: envoy.service.auth.v3.Authorization }
";

/// The dynamic-module filter in place of ext_authz: the module `libcognito_authz_envoy.so`,
/// its settings as `serve`'s TOML (empty here: the pool comes from Envoy's environment, the
/// route policy from the per-route configs).
const MODULE_FILTER: &str = r#"name: envoy.filters.http.dynamic_modules
typed_config:
  "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
  dynamic_module_config: { name: cognito_authz_envoy }
  filter_name: cognito-authz
  # cognito-authz's settings as its TOML file; every variable of `serve` (the pool's
  # AWS_COGNITO_USER_POOL_ID, AWS_COGNITO_USER_POOL_CLIENT_ID, AWS_DEFAULT_REGION among them)
  # is read from Envoy's environment.
  filter_config:
    "@type": type.googleapis.com/google.protobuf.StringValue
    value: ""
"#;

/// The module's stats under the sidecar's Prometheus names: the flag drops Envoy's namespace for
/// a module's stats (`dynamicmodulescustom.`) and the `envoy_` prefix from their Prometheus
/// names, so `cognito_authz.decisions_total...` is `cognito_authz_decisions_total`.
const MODULE_RUNTIME: &str = r#"layers:
- name: static
  # The module's stats under the sidecar's Prometheus names (cognito_authz_decisions_total,
  # ...): without this flag they carry Envoy's namespace (envoy_dynamicmodulescustom_...).
  static_layer:
    envoy.reloadable_features.dynamic_modules_strip_custom_stat_prefix: true
"#;

/// The module defines its stats without labels, one per label value
/// (`cognito_authz.decisions_total.deny.expired`); these turn the name's parts back into the
/// sidecar's labels (`cognito_authz_decisions_total{decision="deny",reason="expired"}`). In
/// each regex the first group leaves the name and the second is the label's value.
const MODULE_STATS_CONFIG: &str = r#"stats_tags:
# The module's stats have no labels, one stat per value (cognito_authz.decisions_total.deny.expired):
# these give the sidecar's labels back (cognito_authz_decisions_total{decision="deny",reason="expired"}).
- tag_name: decision
  regex: '^dynamicmodulescustom\.cognito_authz\.decisions_total(\.([^.]+))\.[^.]+$'
- tag_name: reason
  regex: '^dynamicmodulescustom\.cognito_authz\.decisions_total\.[^.]+(\.([^.]+))$'
- tag_name: pool
  regex: '^dynamicmodulescustom\.cognito_authz\.jwks_fetches_total(\.([^.]+))\.[^.]+$'
- tag_name: result
  regex: '^dynamicmodulescustom\.cognito_authz\.jwks_fetches_total\.[^.]+(\.([^.]+))$'
- tag_name: pool
  regex: '^dynamicmodulescustom\.cognito_authz\.jwks_keys(\.([^.]+))$'
- tag_name: result
  regex: '^dynamicmodulescustom\.cognito_authz\.(?:token_cache_lookups|revocation_checks)_total(\.([^.]+))$'
- tag_name: op
  regex: '^dynamicmodulescustom\.cognito_authz\.redis_errors_total(\.([^.]+))$'
- tag_name: reason
  regex: '^dynamicmodulescustom\.cognito_authz\.revocations_refused_total(\.([^.]+))$'
# Check latency in microseconds (Envoy records integers), in the sidecar's buckets: 25 µs
# doubling to about 1.6 s.
histogram_bucket_settings:
- match: { suffix: cognito_authz.check_duration_microseconds }
  buckets: [25, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200, 102400, 204800, 409600, 819200, 1638400]
"#;

/// A route's policy for the module: what `context_extensions` carry to the sidecar.
const MODULE_PER_ROUTE: &str = r#""@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute
dynamic_module_config: { name: cognito_authz_envoy }
filter_config:
  "@type": type.googleapis.com/google.protobuf.Struct
  value:"#;

/// A flavour of the native config: the same first line, `header` (the flavour's own comment
/// lines) in place of the native comment, then the native config with `edit` applied.
fn flavour(native: &str, header: &str, edit: impl FnOnce(&EnvoyConfig)) -> String {
    let config = EnvoyConfig::parse(native);
    edit(&config);
    let text = config.text();
    let body: Vec<&str> = text.lines().skip_while(|l| l.starts_with('#')).collect();
    format!(
        "# Envoy 1.40 in front of the demo app, asking cognito-authz about every request.\n{header}{}\n",
        body.join("\n")
    )
}

/// The front end's origin in the deployment flavours (Kubernetes, ECS): change it to yours.
pub const DEPLOYED_ORIGIN: &str = "https://cruddur.example.com";

/// Where the Unix-socket flavour expects cognito-authz (`AUTHZ_GRPC_ADDR=unix:` this path).
pub const UDS_PATH: &str = "/run/cognito-authz/authz.sock";

/// Where the mutual-TLS flavour reads its files: the CA that signed cognito-authz's certificate
/// and Envoy's own client certificate and key.
pub const TLS_DIR: &str = "/etc/cognito-authz/tls/";

/// The compose flavour of a native Envoy config: the ingress listens on all interfaces and the
/// clusters find cognito-authz and the app by their service names. `envoy/envoy.compose.yaml`
/// is this function's output.
pub fn compose_envoy_config(native: &str) -> String {
    flavour(
        native,
        "# Compose stack: generated from envoy.yaml by cruddur_demo::stack::compose_envoy_config\n\
         # (a test keeps the two in step). Services: cognito-authz:9001, app:8000.\n",
        compose_edits,
    )
}

fn compose_edits(config: &EnvoyConfig) {
    config
        .listen_on_all_interfaces()
        .resolve_by_name(AUTHZ_CLUSTER, "cognito-authz")
        .resolve_by_name(APP_CLUSTER, "app");
}

/// The HTTP flavour of a native Envoy config: the ext_authz filter speaks Envoy's HTTP protocol
/// (`http_service`) to cognito-authz's `AUTHZ_HTTP_ADDR` over the same HTTP/2 cluster, and the
/// routes carry no `context_extensions` (this protocol has none: `envoy/cognito-authz.toml`
/// holds the same policy as rules). `envoy/envoy.http.yaml` is this function's output.
pub fn http_envoy_config(native: &str) -> String {
    flavour(
        native,
        "# HTTP ext_authz protocol: generated from envoy.yaml by cruddur_demo::stack::http_envoy_config\n\
         # (a test keeps the two in step). Run cognito-authz with AUTHZ_HTTP_ADDR=127.0.0.1:9003 and\n\
         # COGNITO_AUTHZ_CONFIG=envoy/cognito-authz.toml (the routes' policy as rules). With the\n\
         # tracer below on, also AUTHZ_HTTP_TRUST_TRACEPARENT=true: Envoy then writes its own\n\
         # traceparent on every check, and only then is one there Envoy's (docs/operations.md).\n",
        |config| {
            config.over_http_protocol(Ports::DOCUMENTED.authz_http);
        },
    )
}

/// The ECS flavour: the task's containers share localhost (awsvpc), so cognito-authz and the
/// app stay on 127.0.0.1 and only the listener opens to the load balancer.
/// `deploy/ecs/envoy.yaml` is this function's output.
pub fn ecs_envoy_config(native: &str) -> String {
    flavour(
        native,
        "# ECS (Fargate, awsvpc): generated from envoy.yaml by cruddur_demo::stack::ecs_envoy_config\n\
         # (a test keeps the two in step). Baked into the Envoy image by deploy/ecs/envoy.Dockerfile.\n",
        |config| {
            config
                .listen_on_all_interfaces()
                .allow_only_origin(DEPLOYED_ORIGIN);
        },
    )
}

/// The Kubernetes flavour: the Unix-socket config with the listener open to the pod network
/// (cognito-authz shares the pod through an in-memory volume, the app listens on loopback).
pub fn kubernetes_envoy_config(native: &str) -> String {
    flavour(native, UDS_HEADER, |config| {
        config
            .authz_over_pipe(UDS_PATH)
            .listen_on_all_interfaces()
            .allow_only_origin(DEPLOYED_ORIGIN);
    })
}

/// `deploy/kubernetes/envoy-configmap.yaml`: the Kubernetes flavour as the ConfigMap the pod
/// mounts, so the config in the cluster is the tested one.
pub fn kubernetes_configmap(native: &str) -> String {
    let config = kubernetes_envoy_config(native);
    let indented: String = config
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_string()
            } else {
                format!("    {l}\n")
            }
        })
        .collect();
    format!(
        "# Envoy's config for the pod in cruddur.yaml: generated from envoy/envoy.yaml by\n\
         # cruddur_demo::stack::kubernetes_configmap (a test keeps the two in step and validates it).\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cruddur-envoy\n  labels: {{ app.kubernetes.io/name: cruddur }}\n\
         data:\n  envoy.yaml: |\n{indented}"
    )
}

/// The compose flavour for the `replicas` profile: two cognito-authz replicas behind one Envoy.
/// `envoy/envoy.compose-replicas.yaml` is this function's output.
pub fn compose_replicas_envoy_config(native: &str) -> String {
    flavour(
        native,
        "# Compose, profile `replicas`: generated from envoy.yaml by\n\
         # cruddur_demo::stack::compose_replicas_envoy_config. Two cognito-authz replicas sharing Redis.\n\
         # (a test keeps the two in step). Services: cognito-authz:9001, app:8000.\n",
        |config| {
            compose_edits(config);
            config
                .with_health_checks()
                .authz_endpoints(&[("cognito-authz-1", 9001), ("cognito-authz-2", 9001)]);
        },
    )
}

const UDS_HEADER: &str = "# Unix socket: generated from envoy.yaml by cruddur_demo::stack::uds_envoy_config (a test\n\
     # keeps the two in step). Run cognito-authz with AUTHZ_GRPC_ADDR=unix:/run/cognito-authz/authz.sock.\n";

/// The Unix-socket flavour of a native Envoy config: the authz cluster reaches cognito-authz
/// through [`UDS_PATH`] instead of TCP. `envoy/envoy.uds.yaml` is this function's output.
pub fn uds_envoy_config(native: &str) -> String {
    flavour(native, UDS_HEADER, |config| {
        config.authz_over_pipe(UDS_PATH);
    })
}

/// The mutual-TLS flavour of a native Envoy config: Envoy presents a client certificate to
/// cognito-authz and accepts only a server certificate for `cognito-authz` from the CA in
/// [`TLS_DIR`]. `envoy/envoy.tls.yaml` is this function's output.
pub fn tls_envoy_config(native: &str) -> String {
    flavour(
        native,
        "# Mutual TLS to cognito-authz: generated from envoy.yaml by cruddur_demo::stack::tls_envoy_config\n\
         # (a test keeps the two in step). Files in /etc/cognito-authz/tls/: ca.pem, envoy.pem, envoy-key.pem.\n",
        |config| {
            config.authz_over_mutual_tls();
        },
    )
}

/// The in-process flavour: cognito-authz as an Envoy dynamic module, no sidecar.
/// `envoy/envoy.module.yaml` is this function's output.
pub fn module_envoy_config(native: &str) -> String {
    flavour(
        native,
        "# In-process: generated from envoy.yaml by cruddur_demo::stack::module_envoy_config (a test\n\
         # keeps the two in step). cognito-authz runs inside Envoy as a dynamic module, no sidecar:\n\
         # run Envoy with ENVOY_DYNAMIC_MODULES_SEARCH_PATH naming the folder that holds\n\
         # libcognito_authz_envoy.so (cargo build --release -p cognito-authz-envoy) and the app's\n\
         # AWS_COGNITO_USER_POOL_ID, AWS_COGNITO_USER_POOL_CLIENT_ID and AWS_DEFAULT_REGION.\n",
        |config| {
            config.in_process_module();
        },
    )
}

/// The native Envoy config with the documented ports replaced by `ports`.
pub fn render_envoy_config(native: &str, ports: Ports) -> Result<String, StackError> {
    let config = EnvoyConfig::parse(native);
    config.render(ports)?;
    Ok(config.text())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NATIVE: &str = include_str!("../../envoy/envoy.yaml");

    /// Makes a flavour from the native config's text.
    type Generate = fn(&str) -> String;

    /// Every flavour generator, by name.
    const FLAVOURS: [(&str, Generate); 8] = [
        ("compose", compose_envoy_config),
        ("compose-replicas", compose_replicas_envoy_config),
        ("http", http_envoy_config),
        ("ecs", ecs_envoy_config),
        ("kubernetes", kubernetes_envoy_config),
        ("uds", uds_envoy_config),
        ("tls", tls_envoy_config),
        ("module", module_envoy_config),
    ];

    fn data(text: &str) -> serde_json::Value {
        let value: serde_norway::Value = serde_norway::from_str(text).expect("flavour parses");
        serde_json::to_value(value).expect("as JSON")
    }

    /// The flavours edit the config, not its text: a native config laid out otherwise (block
    /// mappings where it has flow ones, other comments, other indentation) yields flavours that
    /// hold the same data.
    #[test]
    fn a_reformatted_native_config_yields_the_same_flavours() {
        let reformatted = NATIVE
            .replace(
                "socket_address: { address: 127.0.0.1, port_value: 9001 }",
                "socket_address:\n                address: 127.0.0.1\n                port_value: 9001",
            )
            .replace(
                "envoy_grpc: { cluster_name: cognito_authz }",
                "envoy_grpc:\n                  cluster_name: cognito_authz  # the authz cluster",
            )
            .replace("    type: STATIC\n", "    # resolved once\n    type: STATIC\n");
        assert_ne!(reformatted, NATIVE);
        assert_eq!(data(&reformatted), data(NATIVE), "the same native data");
        for (name, generate) in FLAVOURS {
            let (ours, theirs) = (generate(NATIVE), generate(&reformatted));
            assert_ne!(ours, theirs, "{name}: the layout shows through");
            assert_eq!(data(&ours), data(&theirs), "{name}: another flavour");
        }
    }

    /// A native config without what a flavour edits fails loudly, naming it, instead of
    /// shipping the native value.
    #[test]
    fn a_native_config_without_the_edited_element_fails_naming_it() {
        let renamed = NATIVE.replace("- name: cognito_authz\n", "- name: authz\n");
        assert_ne!(renamed, NATIVE);
        for (name, generate) in [
            ("uds", uds_envoy_config as fn(&str) -> String),
            ("tls", tls_envoy_config),
            ("compose", compose_envoy_config),
        ] {
            let outcome = std::panic::catch_unwind(|| generate(&renamed));
            let message = outcome.expect_err(name);
            let message = message
                .downcast_ref::<String>()
                .map(String::as_str)
                .unwrap_or_default();
            assert!(message.contains("`cognito_authz`"), "{name}: {message}");
        }
        // A flavour that adds a field the native config already has refuses too.
        let with_tls = tls_envoy_config(NATIVE);
        assert!(std::panic::catch_unwind(|| tls_envoy_config(&with_tls)).is_err());
        // The flavours that leave the authz cluster alone still generate.
        assert!(std::panic::catch_unwind(|| ecs_envoy_config(&renamed)).is_ok());
    }

    /// Each flavour changes what it says and nothing else: its data differs from the native
    /// config's only at the paths it names.
    #[test]
    fn each_flavour_changes_only_what_it_names() {
        let native = data(NATIVE);
        let paths = |flavour: &str| {
            let mut out = Vec::new();
            differences("", &native, &data(flavour), &mut out);
            out
        };
        let clusters = "/static_resources/clusters";
        let authz =
            format!("{clusters}/0/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address");
        let listener = "/static_resources/listeners/0/address/socket_address/address";
        let hcm = "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config";
        let origins = format!("{hcm}/route_config/virtual_hosts/0/typed_per_filter_config/envoy.filters.http.cors/allow_origin_string_match");
        assert_eq!(
            paths(&uds_envoy_config(NATIVE)),
            [format!("{authz}/pipe"), format!("{authz}/socket_address")]
        );
        assert_eq!(
            paths(&tls_envoy_config(NATIVE)),
            [format!("{clusters}/0/transport_socket")]
        );
        assert_eq!(
            paths(&ecs_envoy_config(NATIVE)),
            [
                listener.to_string(),
                format!("{origins}/0/exact"),
                format!("{origins}/1")
            ]
        );
        let mut compose = vec![
            listener.to_string(),
            format!("{clusters}/0/type"),
            format!("{authz}/socket_address/address"),
            format!("{clusters}/1/type"),
            format!("{clusters}/1/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address/address"),
        ];
        compose.sort();
        assert_eq!(paths(&compose_envoy_config(NATIVE)), compose);
        // The module flavour: the second HTTP filter, the four routes' per-filter configs and
        // the clusters (the authz cluster goes, so the list differs from its first entry on).
        let module = paths(&module_envoy_config(NATIVE));
        let routes = format!("{hcm}/route_config/virtual_hosts/0/routes");
        let mut changed: Vec<String> = (0..4)
            .flat_map(|i| {
                let at = format!("{routes}/{i}/typed_per_filter_config");
                [
                    format!("{at}/envoy.filters.http.dynamic_modules"),
                    format!("{at}/envoy.filters.http.ext_authz"),
                ]
            })
            .collect();
        changed.push(format!("{hcm}/http_filters/1"));
        changed.push(clusters.to_string());
        changed.push("/layered_runtime".to_string());
        changed.push("/stats_config".to_string());
        for prefix in &changed {
            assert!(
                module.iter().any(|p| p.starts_with(prefix.as_str())),
                "the module flavour leaves {prefix} alone"
            );
        }
        let others: Vec<&String> = module
            .iter()
            .filter(|p| !changed.iter().any(|c| p.starts_with(c.as_str())))
            .collect();
        assert!(
            others.is_empty(),
            "the module flavour also changes {others:?}"
        );
    }

    /// The JSON-pointer-like paths where `a` and `b` differ, sorted.
    fn differences(at: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        use serde_json::Value;
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    let path = format!("{at}/{key}");
                    match (a.get(key), b.get(key)) {
                        (Some(x), Some(y)) => differences(&path, x, y, out),
                        _ => out.push(path),
                    }
                }
            }
            (Value::Array(a), Value::Array(b)) => {
                for i in 0..a.len().max(b.len()) {
                    let path = format!("{at}/{i}");
                    match (a.get(i), b.get(i)) {
                        (Some(x), Some(y)) => differences(&path, x, y, out),
                        _ => out.push(path),
                    }
                }
            }
            _ if a != b => out.push(at.to_string()),
            _ => {}
        }
        out.sort();
    }

    /// The native config's commented-out tracer, uncommented, is what the demo's switch adds.
    #[test]
    fn the_commented_tracer_is_the_one_the_demo_switch_adds() {
        let mut uncommented = Vec::new();
        let mut inside = false;
        for line in NATIVE.lines() {
            let body = line.trim_start();
            let indent = &line[..line.len() - body.len()];
            if body == "# tracing:" || body == "# - name: opentelemetry_collector" {
                inside = true;
            } else if !body.starts_with("# ") {
                inside = false;
            }
            match body.strip_prefix("# ") {
                Some(rest) if inside => uncommented.push(format!("{indent}{rest}")),
                _ => uncommented.push(line.to_string()),
            }
        }
        let uncommented = uncommented.join("\n");
        assert_ne!(
            data(&uncommented),
            data(NATIVE),
            "nothing was commented out"
        );
        let switched = EnvoyConfig::parse(NATIVE);
        switched.with_tracing("127.0.0.1", 4317, None);
        assert_eq!(data(&uncommented), data(&switched.text()));
    }

    #[test]
    fn every_committed_envoy_flavour_is_generated_from_the_native_config() {
        // (file, committed text, generator, regeneration flag, a line the flavour must hold)
        type Flavour = (
            &'static str,
            &'static str,
            fn(&str) -> String,
            &'static str,
            &'static str,
        );
        let flavours: [Flavour; 8] = [
            (
                "envoy.compose.yaml",
                include_str!("../../envoy/envoy.compose.yaml"),
                compose_envoy_config,
                "--print-compose-envoy",
                "address: cognito-authz, port_value: 9001",
            ),
            (
                "envoy.uds.yaml",
                include_str!("../../envoy/envoy.uds.yaml"),
                uds_envoy_config,
                "--print-uds-envoy",
                "pipe: { path: /run/cognito-authz/authz.sock }",
            ),
            (
                "envoy.tls.yaml",
                include_str!("../../envoy/envoy.tls.yaml"),
                tls_envoy_config,
                "--print-tls-envoy",
                "envoy.transport_sockets.tls",
            ),
            (
                "envoy.http.yaml",
                include_str!("../../envoy/envoy.http.yaml"),
                http_envoy_config,
                "--print-http-envoy",
                "http_service:",
            ),
            (
                "envoy.compose-replicas.yaml",
                include_str!("../../envoy/envoy.compose-replicas.yaml"),
                compose_replicas_envoy_config,
                "--print-compose-replicas-envoy",
                "address: cognito-authz-2, port_value: 9001",
            ),
            (
                "envoy.module.yaml",
                include_str!("../../envoy/envoy.module.yaml"),
                module_envoy_config,
                "--print-module-envoy",
                "name: cognito_authz_envoy",
            ),
            (
                "../deploy/ecs/envoy.yaml",
                include_str!("../../deploy/ecs/envoy.yaml"),
                ecs_envoy_config,
                "--print-ecs-envoy",
                "address: 0.0.0.0, port_value: 8080",
            ),
            (
                "../deploy/kubernetes/envoy-configmap.yaml",
                include_str!("../../deploy/kubernetes/envoy-configmap.yaml"),
                kubernetes_configmap,
                "--print-kubernetes-configmap",
                "pipe: { path: /run/cognito-authz/authz.sock }",
            ),
        ];
        for (file, committed, generate, flag, marker) in flavours {
            assert_eq!(
                committed,
                generate(NATIVE),
                "envoy/{file} is stale: regenerate it with \
                 `cargo run -p cruddur-demo --bin cruddur-demo -- {flag}`"
            );
            assert!(committed.contains(marker), "{file} lacks {marker}");
            // The access log's sub is what the check decided (its dynamic metadata), never a
            // request header: on a denial that is the client's own, forged or not.
            assert!(
                committed.contains(" sub=%DYNAMIC_METADATA(envoy.filters.http.ext_authz:"),
                "{file} logs no sub from the check's metadata"
            );
            assert!(
                !committed.to_ascii_lowercase().contains("%req(x-cognito-"),
                "{file} logs a client's identity header"
            );
        }
    }

    #[test]
    fn the_http_flavour_drops_context_extensions_but_keeps_the_cors_policy() {
        let http = http_envoy_config(NATIVE);
        assert!(!http.contains("context_extensions"));
        let filters = &data(&http)["static_resources"]["listeners"][0]["filter_chains"][0]
            ["filters"][0]["typed_config"]["http_filters"];
        let ext_authz = &filters[1]["typed_config"];
        assert_eq!(filters[1]["name"], "envoy.filters.http.ext_authz");
        assert!(ext_authz.get("grpc_service").is_none() && ext_authz.get("http_service").is_some());
        assert!(!http.contains("disabled: true"), "every route is checked");
        assert!(http.contains("envoy.extensions.filters.http.cors.v3.CorsPolicy"));
        assert_eq!(
            http.matches("- match:").count(),
            NATIVE.matches("- match:").count(),
            "every route stays"
        );
    }

    #[test]
    fn rendering_replaces_every_documented_port() {
        let ports = Ports {
            envoy: 1,
            envoy_admin: 2,
            authz: 3,
            authz_admin: 4,
            app: 5,
            cognito: 6,
            authz_http: 7,
            frontend: 8,
        };
        let text = render_envoy_config(NATIVE, ports).unwrap();
        assert!(
            text.contains("exact: http://127.0.0.1:8\n"),
            "the front end's origin"
        );
        assert!(
            text.contains("exact: http://localhost:8\n"),
            "the front end's origin"
        );
        for old in [
            "port_value: 8080 ",
            "port_value: 9901 ",
            "port_value: 9001 ",
            "port_value: 8000 ",
        ] {
            assert!(!text.contains(old), "{old} left in the rendered config");
        }
        assert!(render_envoy_config("admin: {}", ports).is_err());
        let http = render_envoy_config(&http_envoy_config(NATIVE), ports).unwrap();
        assert!(http.contains("uri: http://127.0.0.1:7") && !http.contains("port_value: 9003"));
    }
}
