//! Tests of the `command` behavior: real `sh` processes, bounded by timeouts.

use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::killpg;
use nix::unistd::Pid;
use tokio::time::timeout;

use super::{Event, LIMIT, RecordingSink, spec};
use crate::behavior::*;

fn params(pairs: &[(&str, &str)]) -> Params {
    pairs.iter().fold(Params::new(), |p, (k, v)| p.with(*k, *v))
}

async fn run_command(params: Params, options: RunOptions) -> (ShardOutcome, Arc<RecordingSink>) {
    let sink = RecordingSink::new();
    let spec = ShardSpec { params, ..spec("confirm_trades", "P001") };
    let outcome = timeout(
        LIMIT,
        run_shard(&CommandBehavior, spec, CancelToken::new(), sink.clone(), &options),
    )
    .await
    .expect("bounded");
    (outcome, sink)
}

fn failed(reason: &str) -> ShardOutcome {
    ShardOutcome::Failed { reason: reason.to_owned() }
}

/// The process group id from the behavior's "started" log line.
fn group_of(sink: &RecordingSink) -> Pid {
    let line = sink
        .log_text()
        .into_iter()
        .find_map(|l| l.strip_prefix("started `sh` as process group ").map(str::to_owned))
        .expect("started line");
    Pid::from_raw(line.parse().expect("numeric pgid"))
}

/// Whether `pid` is a live process (a zombie waiting for its reaper is not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The first output line that is a number: the pid a script echoed.
fn echoed_pid(sink: &RecordingSink) -> Option<i32> {
    sink.logs().into_iter().find(|l| l.level == LogLevel::Info).and_then(|l| l.message.parse().ok())
}

#[tokio::test]
async fn successful_command_streams_stdout_and_stderr_into_the_shard_log() {
    let p = params(&[("shell", "echo hello; echo oops >&2")]);
    let (outcome, sink) = run_command(p, RunOptions::default()).await;
    assert_eq!(outcome, ShardOutcome::Succeeded);
    let logs = sink.logs();
    assert!(logs.iter().any(|l| l.level == LogLevel::Info && l.message == "hello"));
    assert!(logs.iter().any(|l| l.level == LogLevel::Warn && l.message == "oops"));
}

#[tokio::test]
async fn nonzero_exit_and_death_by_signal_fail_with_the_code_or_signal() {
    let (outcome, _) = run_command(params(&[("shell", "exit 3")]), RunOptions::default()).await;
    assert_eq!(outcome, failed("step 0 (run) failed: `sh` exited with code 3"));
    let (outcome, _) = run_command(params(&[("shell", "kill -9 $$")]), RunOptions::default()).await;
    assert_eq!(outcome, failed("step 0 (run) failed: `sh` was killed by signal 9 (SIGKILL)"));
}

#[tokio::test]
async fn command_sees_the_shard_identity_and_extra_env_in_its_environment() {
    let script = r#"echo "$TASKFLOW_DATE|$TASKFLOW_TASK|$TASKFLOW_SHARD|$TASKFLOW_IDEMPOTENCY_KEY|$TASKFLOW_ATTEMPT|$TASKFLOW_GENERATION|$TASKFLOW_COVERED_DATES|$TASKFLOW_SCOPE|$TASKFLOW_PRODUCTS|$EXTRA|$(pwd)""#;
    let p = params(&[("shell", script), ("env.EXTRA", "x y"), ("cwd", "/")]);
    let (outcome, sink) = run_command(p, RunOptions::default()).await;
    assert_eq!(outcome, ShardOutcome::Succeeded);
    assert!(
        sink.log_text().contains(
            &"2026-11-24|confirm_trades|P001|2026-11-24/confirm_trades/P001/g0|1|0|2026-11-24|P001|P001|x y|/"
                .to_owned()
        ),
        "{:?}",
        sink.log_text()
    );
}

#[tokio::test]
async fn program_with_toml_args_runs_without_a_shell() {
    let p = params(&[("program", "printf"), ("args", r#"["%s-%s\n", "a b", "c"]"#)]);
    let (outcome, sink) = run_command(p, RunOptions::default()).await;
    assert_eq!(outcome, ShardOutcome::Succeeded);
    assert!(sink.log_text().contains(&"a b-c".to_owned()), "{:?}", sink.log_text());
}

#[tokio::test]
async fn missing_program_or_parameters_fail_with_a_clear_reason() {
    let p = params(&[("program", "taskflow-no-such-program")]);
    let (outcome, _) = run_command(p, RunOptions::default()).await;
    let ShardOutcome::Failed { reason } = outcome else { panic!("expected failure") };
    assert!(
        reason.starts_with("step 0 (run) failed: cannot start `taskflow-no-such-program`: "),
        "{reason}"
    );

    let (outcome, _) = run_command(Params::new(), RunOptions::default()).await;
    let ShardOutcome::Failed { reason } = outcome else { panic!("expected failure") };
    assert!(reason.contains("needs parameter `program`"), "{reason}");
}

#[tokio::test]
async fn output_is_capped_per_line_and_in_line_count() {
    let script = "seq 1 10; head -c 10000 /dev/zero | tr '\\0' x; echo";
    let p = params(&[("shell", script), ("max_log_lines", "3")]);
    let (outcome, sink) = run_command(p, RunOptions::default()).await;
    assert_eq!(outcome, ShardOutcome::Succeeded);
    let text = sink.log_text();
    assert_eq!(&text[1..4], ["1", "2", "3"], "{text:?}");
    assert!(
        text.contains(&"8 more output lines were not kept (max_log_lines)".to_owned()),
        "{text:?}"
    );

    let p = params(&[("shell", "head -c 10000 /dev/zero | tr '\\0' x; echo")]);
    let (_, sink) = run_command(p, RunOptions::default()).await;
    let long = sink.logs().into_iter().find(|l| l.message.starts_with("xxx")).expect("long line");
    assert!(long.message.len() <= LogLine::MAX_LEN && long.message.ends_with('…'));
}

#[tokio::test]
async fn cancel_kills_the_whole_process_group_and_reaps_it() {
    CommandBehavior::adopt_orphans().expect("become a subreaper");
    let sink = RecordingSink::new();
    let cancel = CancelToken::new();
    let p = params(&[("shell", "sleep 1000 & echo $!; wait")]);
    let spec = ShardSpec { params: p, ..spec("t", "P1") };
    let running = tokio::spawn({
        let (sink, cancel) = (sink.clone(), cancel.clone());
        async move { run_shard(&CommandBehavior, spec, cancel, sink, &RunOptions::default()).await }
    });
    timeout(
        LIMIT,
        sink.wait_until(|events| {
            events.iter().any(|e| matches!(e, Event::Log(l) if l.level == LogLevel::Info))
        }),
    )
    .await
    .expect("the script printed its child's pid");
    let group = group_of(&sink);
    let sleeper = echoed_pid(&sink).expect("sleep pid");
    assert!(alive(sleeper));

    cancel.cancel();
    let outcome =
        timeout(Duration::from_secs(10), running).await.expect("stops promptly").expect("no panic");
    assert_eq!(outcome, ShardOutcome::Cancelled);
    assert_eq!(killpg(group, None), Err(Errno::ESRCH), "no member of the group is left");
    assert!(!alive(group.as_raw()) && !alive(sleeper), "neither the shell nor sleep survived");
}

#[tokio::test]
async fn timeout_kills_the_process_group_and_fails_the_shard() {
    CommandBehavior::adopt_orphans().expect("become a subreaper");
    let p = params(&[("shell", "sleep 1000 & echo $!; wait")]);
    let options = RunOptions::with_timeout(Duration::from_millis(300));
    let (outcome, sink) = run_command(p, options).await;
    assert_eq!(outcome, failed("timed out after 300ms in step 0 (run)"));
    let group = group_of(&sink);
    assert_eq!(killpg(group, None), Err(Errno::ESRCH));
    assert!(!alive(echoed_pid(&sink).expect("sleep pid")));
}

#[tokio::test]
async fn processes_left_behind_in_the_group_are_stopped_when_the_program_exits() {
    CommandBehavior::adopt_orphans().expect("become a subreaper");
    let p = params(&[("shell", "sleep 1000 & echo $!")]);
    let (outcome, sink) = run_command(p, RunOptions::default()).await;
    assert_eq!(outcome, ShardOutcome::Succeeded);
    assert_eq!(killpg(group_of(&sink), None), Err(Errno::ESRCH));
    assert!(!alive(echoed_pid(&sink).expect("sleep pid")));
    assert!(sink.log_text().iter().any(|l| l.contains("left processes in its group")));
}

#[tokio::test]
async fn group_ignoring_sigterm_is_killed_after_the_grace() {
    CommandBehavior::adopt_orphans().expect("become a subreaper");
    let p = params(&[
        ("shell", "trap '' TERM; sleep 1000 & echo $!; wait"),
        ("kill_grace_secs", "0.2"),
    ]);
    let options = RunOptions::with_timeout(Duration::from_millis(300));
    let (outcome, sink) = run_command(p, options).await;
    assert_eq!(outcome, failed("timed out after 300ms in step 0 (run)"));
    assert_eq!(killpg(group_of(&sink), None), Err(Errno::ESRCH));
    assert!(!alive(echoed_pid(&sink).expect("sleep pid")));
    assert!(
        sink.log_text().iter().any(|l| l.contains("ignored SIGTERM for 200ms; sending SIGKILL"))
    );
}
