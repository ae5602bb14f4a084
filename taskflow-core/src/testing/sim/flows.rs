//! Random flows for the simulator: a DAG of 5–10 tasks over 20–30 products and 3–6
//! distributors, levels, priorities, retries, manual and timed triggers drawn from the seed,
//! two resources and the tasks' needs of them; at least 200 shards.

use std::fmt::Write;

use super::Rng;
use crate::flow::Flow;

/// A stable hash of a few numbers (no `HashMap` hasher: runs replay exactly).
pub(crate) fn hash(parts: &[u64]) -> u64 {
    parts.iter().fold(0x5151u64, |h, &p| Rng::new(h ^ p).next_u64())
}

/// A random, valid flow drawn from `rng`.
pub fn random_flow(rng: &mut Rng) -> Flow {
    let d = rng.range(4, 7);
    let p = rng.range(25, 40);
    let mut distributors = String::new();
    for i in 1..=d {
        let kind = if i == 1 { "direct" } else { "traditional-agent" };
        let _ = write!(
            distributors,
            "[[distributor]]\ncode = \"D{i}\"\nname = \"d{i}\"\ntype = \"{kind}\"\n\n"
        );
    }
    let mut products = String::new();
    for i in 1..=p {
        let sellers: Vec<String> =
            (1..=d).filter(|_| rng.chance(0.7)).map(|j| format!("\"D{j}\"")).collect();
        let sellers = if sellers.is_empty() { "\"D1\"".to_owned() } else { sellers.join(", ") };
        let _ = write!(
            products,
            "[[product]]\ncode = \"P{i}\"\nname = \"p{i}\"\nmode = \"open-nav\"\nlifecycle = \"open\"\ndistributors = [{sellers}]\n\n"
        );
    }
    let n = rng.range(5, 10) as usize;
    let mut flow = String::from(
        "[flow]\nname = \"sim\"\ntime_zone = \"Asia/Shanghai\"\nopen_days = \"business-days\"\n\n",
    );
    // Resources and needs from a hash too: `db` of 1–3 units, `ftp` an exclusive lock.
    let db_units = 1 + hash(&[0x7265_736f, d, p]) % 3;
    let _ = write!(
        flow,
        "[[resource]]\nname = \"db\"\nunits = {db_units}\n\n[[resource]]\nname = \"ftp\"\nunits = 1\n\n"
    );
    for t in 0..n {
        let _ = writeln!(
            flow,
            "[[task]]\nid = \"t{t}\"\nname = \"task {t}\"\nbehavior = \"sim.b{}\"",
            t % 3
        );
        // Two per-distributor product tasks at least, so the day has ≥ 200 shards.
        let level = if t == 1 || t == 2 { 2 } else { rng.range(0, 3) };
        match level {
            0 => flow.push_str("level = \"system\"\n"),
            1 => flow.push_str("level = \"product\"\nin_lifecycle = [\"open\"]\n"),
            2 => flow.push_str(
                "level = \"product\"\nin_lifecycle = [\"open\"]\nper_distributor = true\n",
            ),
            _ => flow.push_str("level = \"distributor\"\n"),
        }
        if t > 0 {
            let mut deps: Vec<usize> = (0..t).filter(|_| rng.chance(0.35)).collect();
            if deps.is_empty() {
                deps.push(rng.range(0, t as u64 - 1) as usize);
            }
            let deps: Vec<String> = deps.iter().map(|d| format!("\"t{d}\"")).collect();
            let _ = writeln!(flow, "depends_on = [{}]", deps.join(", "));
        }
        match rng.range(0, 9) {
            0 => flow.push_str("trigger = \"manual\"\n"),
            1 => flow.push_str("trigger = \"at 15:01\"\n"),
            _ => {}
        }
        // Priorities from a hash, not from `rng`: the draws of every seed stay as they were.
        match hash(&[0x7072_696f, d, p, t as u64]) % 4 {
            0 => {}
            k => {
                let _ = writeln!(flow, "priority = {}", k as i64 - 2);
            }
        }
        match hash(&[0x6e65_6564, d, p, t as u64]) % 5 {
            0 | 1 => {}
            2 => {
                let need = 1 + hash(&[0x756e_6974, d, p, t as u64]) % db_units;
                let _ = writeln!(flow, "needs = {{ db = {need} }}");
            }
            3 => flow.push_str("needs = { ftp = 1 }\n"),
            _ => flow.push_str("needs = { db = 1, ftp = 1 }\n"),
        }
        let _ = writeln!(flow, "retries = {}", rng.range(0, 3));
        let _ = writeln!(flow, "retry_backoff = \"{}s\"", rng.range(0, 1));
        flow.push('\n');
    }
    match Flow::from_strs(&flow, &products, &distributors, crate::testing::CALENDAR) {
        Ok(f) => f,
        // A generator bug, not an input: show the flow it made.
        Err(e) => panic!("the simulator made an invalid flow: {e}\n{flow}"),
    }
}
