//! `kill -9` at random instants of a rolling `taskflow standalone` that runs business day
//! after business day on the test clock — mid-day, while a day closes and snapshots, while it
//! waits for midnight, in the middle of a cutover — and a restart each time without `--date`.
//! At the end every business day of the range is closed exactly once (no weekend or holiday
//! opened) and the file ledger holds each posting exactly once.
//!
//! The flow is the bundled example with its manual `day_init` made automatic (a rolling
//! process has no operator). The test clock runs on across restarts (each start is given the
//! instant the previous one would have reached). `TASKFLOW_CHAOS_SEED` replays a fault plan.

#[path = "cluster_common/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{Proc, Rng};
use taskflow_examples::fund_clearing::FileLedger;

/// The range: a month end, National Day (Oct 1–7), the make-up Saturday Oct 10, a Sunday.
const DAYS: [&str; 6] =
    ["2026-09-29", "2026-09-30", "2026-10-08", "2026-10-09", "2026-10-10", "2026-10-12"];
/// The test clock starts on the evening of the first day and runs this much faster.
const SPEED: i64 = 100_000;
const KILLS: usize = 6;

/// The example flow with no manual trigger, in `dir`.
fn flow_dir(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let example = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/fund-clearing"));
    for f in ["products.toml", "distributors.toml", "calendar.toml"] {
        std::fs::copy(example.join(f), dir.join(f)).unwrap();
    }
    let flow = std::fs::read_to_string(example.join("flow.toml")).unwrap();
    assert!(flow.contains("trigger = \"manual\""));
    std::fs::write(
        dir.join("flow.toml"),
        flow.replace("trigger = \"manual\"", "trigger = \"auto\""),
    )
    .unwrap();
}

fn start(flow: &Path, data: &Path, ledger: &Path, clock: &str, first: bool) -> Proc {
    let mut args = vec!["standalone", "--http", "127.0.0.1:0", "--token", "chaos-token-0123456"];
    args.extend(["--flow", flow.to_str().unwrap(), "--data", data.to_str().unwrap()]);
    if first {
        args.extend(["--date", DAYS[0]]);
    }
    Proc::spawn(
        &args,
        &[
            ("TASKFLOW_TEST_CLOCK", clock),
            ("TASKFLOW_LEDGER_DIR", ledger.to_str().unwrap()),
            ("TASKFLOW_FUND_STEP_DELAY", "0ms"),
        ],
    )
}

/// The days in `data` and whether each closed, read with the real binary (read-only).
fn days_closed(data: &Path) -> Vec<(String, bool)> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_taskflow"))
        .args(["store", "inspect"])
        .arg(data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut days: Vec<(String, bool)> = std::fs::read_dir(data.join("days"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.len() == 10)
                .map(|n| (n.clone(), day_closed(data, &n)))
                .collect()
        })
        .unwrap_or_default();
    days.sort();
    let verdicts: Vec<&str> = text.lines().filter(|l| l.starts_with("VERDICT:")).collect();
    assert!(
        !verdicts.is_empty() && verdicts.iter().all(|v| !v.contains("corrupt")),
        "a store is damaged:\n{text}"
    );
    days
}

fn day_closed(data: &Path, date: &str) -> bool {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_taskflow"))
        .args(["store", "events", "--date", date])
        .arg(data)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("\"day_closed\"")
}

#[test]
fn kill_9_at_random_instants_across_cutovers_loses_and_repeats_nothing() {
    let seed = std::env::var("TASKFLOW_CHAOS_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(0x5eed_c0de_0000_0001);
    println!("TASKFLOW_CHAOS_SEED={seed:#x}");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let (flow, data, ledger) =
        (tmp.path().join("flow"), tmp.path().join("data"), tmp.path().join("ledger"));
    flow_dir(&flow);
    let base = chrono::DateTime::parse_from_rfc3339("2026-09-29T20:00:00+08:00").unwrap();
    let began = Instant::now();
    let clock = || {
        let ms = i64::try_from(began.elapsed().as_millis()).unwrap() * SPEED;
        format!("{},{SPEED}", (base + chrono::Duration::milliseconds(ms)).to_rfc3339())
    };
    let mut kills = Vec::new();
    let mut p = start(&flow, &data, &ledger, &clock(), true);
    for _ in 0..KILLS {
        // 0.2–2 s: a fifth of a calendar day to two, at 100,000× real time.
        let after = Duration::from_millis(200 + rng.next() % 1800);
        std::thread::sleep(after);
        p.signal("-9");
        let _ = p.wait_exit(Duration::from_secs(10));
        kills.push(after);
        p = start(&flow, &data, &ledger, &clock(), false);
    }
    println!("kills after {kills:?}");
    let last = DAYS[DAYS.len() - 1];
    let deadline = Instant::now() + Duration::from_secs(240);
    while !data.join("days").join(last).exists() || !day_closed(&data, last) {
        assert!(Instant::now() < deadline, "{last} did not close:\n{}", p.output());
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(p);
    // The process went on to the days after the range: only those up to its end are checked.
    let days: Vec<(String, bool)> =
        days_closed(&data).into_iter().filter(|(d, _)| d.as_str() <= last).collect();
    let want: Vec<(String, bool)> = DAYS.iter().map(|d| ((*d).to_owned(), true)).collect();
    assert_eq!(days, want, "each business day of the range closed, no other day opened");

    // A shard running at a kill is unconfirmed, rolled back (its postings reversed) and run
    // again under the next generation (`auto-rollback`, the default): so per posting without
    // its generation, exactly one generation stays committed, and no key is posted twice (a
    // rollback may reverse a key its killed attempt never reached: a no-op).
    let ledger = FileLedger::open(&ledger).unwrap();
    let in_range = |k: &str| k < "2026-10-13";
    let attempts = ledger.attempts().unwrap();
    let twice: Vec<_> = attempts.iter().filter(|(k, a)| in_range(k) && a.new > 1).collect();
    assert!(twice.is_empty(), "keys posted twice: {twice:?}");
    let mut net: std::collections::BTreeMap<String, (i64, u32)> = Default::default();
    for (key, amount) in ledger.entries().unwrap().into_iter().filter(|(k, _)| in_range(k)) {
        let e = net.entry(without_generation(&key)).or_default();
        *e = (e.0 + amount, e.1 + 1);
    }
    let doubled: Vec<_> = net.iter().filter(|(_, (_, n))| *n > 1).collect();
    assert!(doubled.is_empty(), "two generations of a posting committed: {doubled:?}");
    for date in DAYS {
        assert!(net.keys().any(|k| k.starts_with(date)), "no posting on {date}");
    }
    // The day of the reference run is exact, amount for amount.
    let expected: std::collections::BTreeMap<String, i64> = support::reference_ledger(tmp.path())
        .into_iter()
        .map(|(k, a)| (without_generation(&k), a))
        .collect();
    let day: std::collections::BTreeMap<String, i64> = net
        .into_iter()
        .filter(|(k, _)| k.starts_with(support::DATE))
        .map(|(k, (a, _))| (k, a))
        .collect();
    assert_eq!(day, expected, "the postings of {}", support::DATE);
}

/// A ledger key without its `/gN/` generation part.
fn without_generation(key: &str) -> String {
    key.split('/')
        .filter(|p| {
            !(p.len() > 1 && p.starts_with('g') && p[1..].bytes().all(|b| b.is_ascii_digit()))
        })
        .collect::<Vec<_>>()
        .join("/")
}
