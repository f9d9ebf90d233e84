//! The main job: start the whole local stack (Cognito emulator, cognito-authz, the demo app,
//! Envoy) on the documented loopback ports, walk through the bootcamp app's flows, then keep
//! serving until Ctrl-C.
//!
//! Flags: `--exit-after-walkthrough` stops after the walkthrough (exit 0 when every step held);
//! `--module` runs cognito-authz inside Envoy (the dynamic module) instead of as a sidecar;
//! `--print-compose-envoy`, `--print-uds-envoy`, `--print-tls-envoy` and `--print-http-envoy`
//! print the Envoy config flavours as generated from envoy/envoy.yaml.
//!
//! With `OTEL_EXPORTER_OTLP_ENDPOINT=http://host:port` set (an OTLP/gRPC collector such as
//! Jaeger's), Envoy traces every request and cognito-authz joins each trace: one request's path
//! through Envoy, the check, Cognito and the app shows as one trace there.

use std::path::PathBuf;
use std::process::ExitCode;

use cruddur_demo::stack::{
    compose_envoy_config, compose_replicas_envoy_config, ecs_envoy_config, http_envoy_config,
    kubernetes_configmap, module_envoy_config, tls_envoy_config, uds_envoy_config, Layout, Options,
    Ports, Protocol, Stack,
};
use cruddur_demo::walkthrough;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("usage: cruddur-demo [--exit-after-walkthrough] [--print-compose-envoy] [--print-uds-envoy] [--print-tls-envoy] [--print-http-envoy] [--print-compose-replicas-envoy] [--print-ecs-envoy] [--print-kubernetes-configmap] [--print-module-envoy] [--module]");
        println!("Run from the project root (scripts/demo does).");
        return ExitCode::SUCCESS;
    }
    let flavour = [
        "--print-compose-envoy",
        "--print-uds-envoy",
        "--print-tls-envoy",
        "--print-http-envoy",
        "--print-compose-replicas-envoy",
        "--print-ecs-envoy",
        "--print-kubernetes-configmap",
        "--print-module-envoy",
    ]
    .into_iter()
    .find(|f| args.iter().any(|a| a == f));
    if let Some(flavour) = flavour {
        return match std::fs::read_to_string(root.join("envoy/envoy.yaml")) {
            Ok(native) => {
                print!(
                    "{}",
                    match flavour {
                        "--print-compose-envoy" => compose_envoy_config(&native),
                        "--print-uds-envoy" => uds_envoy_config(&native),
                        "--print-http-envoy" => http_envoy_config(&native),
                        "--print-compose-replicas-envoy" => compose_replicas_envoy_config(&native),
                        "--print-ecs-envoy" => ecs_envoy_config(&native),
                        "--print-kubernetes-configmap" => kubernetes_configmap(&native),
                        "--print-module-envoy" => module_envoy_config(&native),
                        _ => tls_envoy_config(&native),
                    }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("envoy/envoy.yaml: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(unknown) = args
        .iter()
        .find(|a| *a != "--exit-after-walkthrough" && *a != "--module")
    {
        eprintln!("cruddur-demo: unknown argument {unknown} (see --help)");
        return ExitCode::from(2);
    }
    let exit_after = args.iter().any(|a| a == "--exit-after-walkthrough");
    let module = args.iter().any(|a| a == "--module");

    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_else(|| root.join("target/release"));
    let work_dir = root.join(".run");
    let layout = match Layout::new(&root, &bin_dir, &work_dir) {
        Ok(layout) => layout,
        Err(e) => {
            eprintln!("cruddur-demo: {e}");
            return ExitCode::from(2);
        }
    };
    let ports = Ports::DOCUMENTED;
    println!("Starting the stack (logs in {}):", work_dir.display());
    let traces = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|v| !v.is_empty());
    let options = Options {
        traces: traces.clone(),
        protocol: if module {
            Protocol::Module
        } else {
            Protocol::Grpc
        },
        ..Options::default()
    };
    let stack = match Stack::start_options(layout, ports, options).await {
        Ok(stack) => stack,
        Err(e) => {
            eprintln!("cruddur-demo: {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "  Cognito emulator   http://127.0.0.1:{}  (pool {}, app client {})",
        ports.cognito, stack.pool.pool_id, stack.pool.client_id
    );
    if module {
        println!("  cognito-authz      inside Envoy (libcognito_authz_envoy.so, envoy/envoy.module.yaml)");
    } else {
        println!(
            "  cognito-authz      grpc 127.0.0.1:{}, admin http://127.0.0.1:{}/metrics",
            ports.authz, ports.authz_admin
        );
    }
    println!(
        "  demo app           http://127.0.0.1:{} (behind Envoy)",
        ports.app
    );
    println!(
        "  Envoy              http://127.0.0.1:{}  (admin http://127.0.0.1:{})",
        ports.envoy, ports.envoy_admin
    );
    println!(
        "  front end          {}  (open it in a browser; codes appear on the page)",
        stack.frontend_url()
    );
    if let Some(collector) = &traces {
        println!("  traces             Envoy and cognito-authz export to {collector}");
    }
    println!();

    let steps = walkthrough::run(&stack, |step| {
        println!(
            "{} {}",
            if step.ok { "[ok]  " } else { "[FAIL]" },
            step.title
        );
        for line in &step.lines {
            println!("         {line}");
        }
    })
    .await;
    let failed = steps.iter().filter(|s| !s.ok).count();
    println!();
    println!("{} steps, {} failed", steps.len(), failed);
    if failed > 0 || exit_after {
        return if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }

    println!();
    println!("Still serving. Try:");
    println!(
        "  curl -i http://127.0.0.1:{}/api/activities/home",
        ports.envoy
    );
    if !module {
        println!(
            "  .venv/bin/grpcurl -plaintext 127.0.0.1:{} list",
            ports.authz
        );
    }
    println!(
        "  open {} in a browser: sign up, confirm, sign in, sign out everywhere",
        stack.frontend_url()
    );
    println!("Ctrl-C stops everything.");
    wait_for_stop().await;
    println!("Stopping.");
    drop(stack);
    ExitCode::SUCCESS
}

async fn wait_for_stop() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
