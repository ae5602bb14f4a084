//! Placement by hosted behavior with real processes: an executor built from taskflow-core with
//! a behavior of its own (`examples/src/bin/custom_executor.rs`, hosting only `custom.stamp`)
//! joins next to a stock `taskflow executor`; the manager gives each only the shards of the
//! behaviors it hosts. An executor hosting none of the flow's behaviors is rejected clearly.

#[path = "cluster_common/mod.rs"]
mod support;

#[path = "ledger_flow/mod.rs"]
mod ledger_flow;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::*;

/// The example binary: built next to `taskflow`, or built now.
fn custom_executor() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_taskflow")).with_file_name("custom_executor");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-p", "taskflow-examples", "--bin", "custom_executor"])
            .status()
            .expect("cargo runs");
        assert!(ok.success(), "building the custom_executor example");
    }
    assert!(path.exists(), "{} exists", path.display());
    path
}

fn spawn_custom(c: &Cluster, name: &str, stamp: &Path) -> Proc {
    let exe = custom_executor();
    Proc::spawn_exe(
        &exe,
        &[&c.addr, name, "2"],
        &[("TASKFLOW_STAMP_FILE", stamp.to_str().unwrap())],
    )
}

fn write_flow(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let flow = r#"
[flow]
name = "placement"
time_zone = "Asia/Shanghai"

[[task]]
id = "plain"
name = "plain"
level = "product"
in_lifecycle = ["open"]
behavior = "command"
params = { shell = "echo \"$TASKFLOW_IDEMPOTENCY_KEY\"" }

[[task]]
id = "stamped"
name = "stamped"
level = "product"
in_lifecycle = ["open"]
behavior = "custom.stamp"
depends_on = ["plain"]
"#;
    std::fs::write(dir.join("flow.toml"), flow).unwrap();
    std::fs::write(dir.join("products.toml"), ledger_flow::PRODUCTS).unwrap();
    std::fs::write(dir.join("distributors.toml"), ledger_flow::DISTRIBUTORS).unwrap();
    std::fs::write(dir.join("calendar.toml"), ledger_flow::CALENDAR).unwrap();
}

#[test]
fn shards_go_only_to_executors_that_host_their_behavior() {
    let c = Cluster::new();
    let flow = c.dir.path().join("flow");
    write_flow(&flow);
    let stamp = c.dir.path().join("stamps.txt");
    let mut m = c.manager_with(2000, &[], &["--flow", flow.to_str().unwrap()]);
    let custom = spawn_custom(&c, "custom", &stamp);
    assert!(custom.wait_for("joined the manager", Duration::from_secs(30)), "{}", custom.output());
    let stock = c.executor("stock", 2, &[]);
    assert!(stock.wait_for("joined the manager", Duration::from_secs(30)), "{}", stock.output());
    let code = m.wait_exit(Duration::from_secs(60));
    assert_eq!(code, Some(0), "manager:\n{}\ncustom:\n{}", m.output(), custom.output());
    assert_all_done(&c.read_report());
    // Every `custom.stamp` shard ran on the custom executor (3 products, one shard each); the
    // `command` shards could only run on the stock one (the custom executor does not host
    // `command`: had it been given one, its shard would have failed and the day with it).
    let stamps = std::fs::read_to_string(&stamp).unwrap();
    let lines: Vec<&str> = stamps.lines().collect();
    assert_eq!(lines.len(), 3, "{stamps}");
    assert!(lines.iter().all(|l| l.ends_with(" custom") && l.contains("/stamped/")), "{stamps}");
}

#[test]
fn an_executor_hosting_none_of_the_flows_behaviors_is_rejected() {
    let c = Cluster::new();
    // The bundled fund-clearing flow uses no `custom.stamp`.
    let m = c.manager(2000, &[]);
    let mut custom = spawn_custom(&c, "useless", &c.dir.path().join("stamps.txt"));
    let code = custom.wait_exit(Duration::from_secs(30));
    assert_ne!(code, Some(0), "{}", custom.output());
    assert_ne!(code, None, "it exits: {}", custom.output());
    assert!(custom.output().contains("unknown behavior"), "{}", custom.output());
    assert!(m.wait_for("join rejected", Duration::from_secs(5)), "{}", m.output());
    drop(m);
}
