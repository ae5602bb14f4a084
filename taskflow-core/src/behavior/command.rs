//! The built-in `command` behavior: runs a program per shard, in its own process group, with
//! the shard's identity in its environment and its output in the shard log.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};

use super::{BehaviorError, LogLevel, LogLine, Params, ShardContext, ShardLogger, TaskBehavior};

/// Runs a program per shard; one step named `run`. Exit code 0 is success, anything else (or
/// death by a signal) fails the shard with the code or signal in the reason.
///
/// # Parameters (`[task.params]` in the flow file)
///
/// | key | meaning |
/// |---|---|
/// | `program` | the program to run (looked up in `PATH`) |
/// | `args` | its arguments: a TOML array of strings (`'["--date", "T"]'`), or words split on whitespace |
/// | `shell` | instead of `program`/`args`: a script run with `sh -c` |
/// | `cwd` | working directory (default: the executor's) |
/// | `env.NAME` | an extra environment variable `NAME` |
/// | `kill_grace_secs` | after a stop or timeout, how long the process group gets between SIGTERM and SIGKILL (default 5) |
/// | `max_log_lines` | output lines kept in the shard log; the rest are counted, not kept (default 10000) |
///
/// # Environment
///
/// The program inherits the executor's environment plus:
///
/// | variable | value |
/// |---|---|
/// | `TASKFLOW_DATE` | the business date, `2026-11-24` |
/// | `TASKFLOW_TASK` | the task id |
/// | `TASKFLOW_SHARD` | the shard key (`P001`, `P001@D01`, `*`) |
/// | `TASKFLOW_IDEMPOTENCY_KEY` | `2026-11-24/confirm_trades/P001/g0` — key your writes by it |
/// | `TASKFLOW_ATTEMPT` | the attempt number, from 1 |
/// | `TASKFLOW_GENERATION` | the shard's generation (bumped by each rollback) |
/// | `TASKFLOW_COVERED_DATES` | the covered calendar dates, comma-separated |
/// | `TASKFLOW_SCOPE` | the shard's scope item keys, comma-separated |
/// | `TASKFLOW_PRODUCTS` / `TASKFLOW_DISTRIBUTORS` | the distinct product / distributor codes of the scope, comma-separated |
///
/// # Output and stopping
///
/// stdout lines go to the shard log at `info`, stderr lines at `warn`, streamed line by line
/// (lines longer than [`LogLine::MAX_LEN`] are cut). The program runs in its own process group;
/// on cancellation or timeout the whole group gets SIGTERM, then SIGKILL after the grace, and
/// the program is reaped. Processes it leaves behind in its group when it exits are killed too.
#[derive(Debug, Clone, Default)]
pub struct CommandBehavior;

impl CommandBehavior {
    /// The name it is registered under by [`BehaviorRegistry::with_builtins`](super::BehaviorRegistry::with_builtins).
    pub const NAME: &'static str = "command";

    /// Makes this process adopt its orphaned descendants (Linux `PR_SET_CHILD_SUBREAPER`), so
    /// that after killing a process group the `command` behavior reaps every member itself.
    ///
    /// Call it once at executor start-up. Without it, members whose leader died are reparented
    /// to PID 1; until PID 1 reaps them they linger as zombies, still counted in their process
    /// group, and the behavior waits for that (container init processes may reap slowly or
    /// never). It is process-wide, hence opt-in.
    #[cfg(target_os = "linux")]
    pub fn adopt_orphans() -> std::io::Result<()> {
        nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from)
    }
}

impl TaskBehavior for CommandBehavior {
    fn steps(&self) -> &[&str] {
        &["run"]
    }

    async fn run_step(&self, ctx: &mut ShardContext, _step: usize) -> Result<(), BehaviorError> {
        let plan = Plan::from_params(ctx.params())?;
        let mut child = plan.command(ctx).spawn().map_err(|error| {
            let place = plan.cwd.as_deref().map(|c| format!(" in `{c}`")).unwrap_or_default();
            BehaviorError::new(format!("cannot start `{}`{place}: {error}", plan.program))
        })?;
        let pid = child.id().and_then(|id| i32::try_from(id).ok());
        let Some(pid) = pid else {
            return Err(BehaviorError::new(format!("`{}` has no process id", plan.program)));
        };
        // `process_group(0)` made the child the leader of a group whose id is its pid.
        let group = GroupGuard(Pid::from_raw(pid));
        ctx.debug(format!("started `{}` as process group {pid}", plan.program));

        let lines = Arc::new(LineBudget::new(plan.max_log_lines));
        let mut pumps = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(stdout, ctx.logger(), LogLevel::Info, lines.clone())));
        }
        if let Some(stderr) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(stderr, ctx.logger(), LogLevel::Warn, lines.clone())));
        }

        let ended = tokio::select! {
            status = child.wait() => Ended::Exited(status),
            () = ctx.cancelled() => Ended::Stopped,
        };
        let ended = match ended {
            Ended::Stopped => {
                terminate(&mut child, group.0, plan.kill_grace, &ctx.logger()).await;
                Ended::Stopped
            }
            Ended::Exited(status) => {
                if !group_is_empty(group.0) {
                    ctx.warn(format!(
                        "`{}` left processes in its group; stopping them",
                        plan.program
                    ));
                    terminate(&mut child, group.0, plan.kill_grace, &ctx.logger()).await;
                }
                Ended::Exited(status)
            }
        };
        group.disarm();

        // Output ends when every writer closed the pipes; a process that escaped the group may
        // hold them open, so the wait is bounded.
        let aborts: Vec<_> = pumps.iter().map(|p| p.abort_handle()).collect();
        let drained = timeout(PIPE_DRAIN, async {
            for pump in pumps {
                let _ = pump.await;
            }
        })
        .await;
        if drained.is_err() {
            aborts.iter().for_each(|a| a.abort());
            ctx.warn("output pipes still open after the program ended; stopped reading them");
        }
        let suppressed = lines.suppressed.load(Ordering::Relaxed);
        if suppressed > 0 {
            ctx.warn(format!("{suppressed} more output lines were not kept (max_log_lines)"));
        }

        match ended {
            Ended::Stopped => Err(BehaviorError::new(format!(
                "`{}` stopped: process group {pid} terminated",
                plan.program
            ))),
            Ended::Exited(status) => {
                let status = status?;
                if status.success() {
                    Ok(())
                } else {
                    Err(BehaviorError::new(format!("`{}` {}", plan.program, describe(status))))
                }
            }
        }
    }
}

/// How long output is still read after the program ended.
const PIPE_DRAIN: Duration = Duration::from_secs(2);
/// How long to wait for a SIGKILLed group to disappear before giving up.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// How often to look whether a process group is gone (there is no signal for it).
const GROUP_POLL: Duration = Duration::from_millis(10);

enum Ended {
    Exited(std::io::Result<ExitStatus>),
    Stopped,
}

/// What to run, from the task's parameters.
#[derive(Debug)]
struct Plan {
    program: String,
    args: Vec<String>,
    cwd: Option<String>,
    env: Vec<(String, String)>,
    kill_grace: Duration,
    max_log_lines: usize,
}

impl Plan {
    fn from_params(params: &Params) -> Result<Self, BehaviorError> {
        let (program, args) = match (params.get("shell"), params.get("program")) {
            (Some(script), None) => ("sh".to_owned(), vec!["-c".to_owned(), script.to_owned()]),
            (None, Some(program)) => (
                program.to_owned(),
                params.get("args").map(parse_args).transpose()?.unwrap_or_default(),
            ),
            (Some(_), Some(_)) => {
                return Err(BehaviorError::new(
                    "the command behavior takes `program` or `shell`, not both",
                ));
            }
            (None, None) => {
                return Err(BehaviorError::new(
                    "the command behavior needs parameter `program` (with optional `args`) or `shell`",
                ));
            }
        };
        let kill_grace = match params.get("kill_grace_secs") {
            None => Duration::from_secs(5),
            Some(text) => text
                .parse::<f64>()
                .ok()
                .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                .ok_or_else(|| {
                    BehaviorError::new(format!(
                        "parameter `kill_grace_secs` = `{text}` is not a number of seconds"
                    ))
                })?,
        };
        let max_log_lines = match params.get("max_log_lines") {
            None => 10_000,
            Some(text) => text.parse().map_err(|_| {
                BehaviorError::new(format!("parameter `max_log_lines` = `{text}` is not a count"))
            })?,
        };
        Ok(Plan {
            program,
            args,
            cwd: params.get("cwd").map(str::to_owned),
            env: params.with_prefix("env.").map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            kill_grace,
            max_log_lines,
        })
    }

    fn command(&self, ctx: &ShardContext) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            // The last resort if the step is abandoned; the group guard kills the rest.
            .kill_on_drop(true);
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        let join = |items: Vec<String>| items.join(",");
        let mut products: Vec<String> =
            ctx.scope().iter().filter_map(|i| i.product.clone()).collect();
        products.sort();
        products.dedup();
        let mut distributors: Vec<String> =
            ctx.scope().iter().filter_map(|i| i.distributor.clone()).collect();
        distributors.sort();
        distributors.dedup();
        command
            .env("TASKFLOW_DATE", ctx.date().to_string())
            .env("TASKFLOW_TASK", ctx.task().as_str())
            .env("TASKFLOW_SHARD", ctx.shard().as_str())
            .env("TASKFLOW_IDEMPOTENCY_KEY", ctx.idempotency_key().to_string())
            .env("TASKFLOW_ATTEMPT", ctx.attempt().to_string())
            .env("TASKFLOW_GENERATION", ctx.generation().to_string())
            .env(
                "TASKFLOW_COVERED_DATES",
                join(ctx.covered_dates().iter().map(ToString::to_string).collect()),
            )
            .env("TASKFLOW_SCOPE", join(ctx.scope().iter().map(|i| i.key().0).collect()))
            .env("TASKFLOW_PRODUCTS", join(products))
            .env("TASKFLOW_DISTRIBUTORS", join(distributors));
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }
}

fn parse_args(text: &str) -> Result<Vec<String>, BehaviorError> {
    #[derive(serde::Deserialize)]
    struct Args {
        a: Vec<String>,
    }
    let text = text.trim();
    if text.starts_with('[') {
        toml::from_str::<Args>(&format!("a = {text}")).map(|args| args.a).map_err(|error| {
            BehaviorError::new(format!("parameter `args` is not a TOML array of strings: {error}"))
        })
    } else {
        Ok(text.split_whitespace().map(str::to_owned).collect())
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(name) => format!("was killed by signal {signal} ({name})"),
            Err(_) => format!("was killed by signal {signal}"),
        },
        (None, None) => format!("ended with {status}"),
    }
}

/// Kills the process group if the step future is dropped before the group was cleaned up.
struct GroupGuard(Pid);

impl GroupGuard {
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        let _ = killpg(self.0, Signal::SIGKILL);
    }
}

fn group_is_empty(group: Pid) -> bool {
    // Signal 0 checks for existence; zombies awaiting their reaper do not count.
    killpg(group, None) == Err(Errno::ESRCH)
}

/// SIGTERM to the group, up to `grace` for it to go, then SIGKILL; reaps the leader.
async fn terminate(child: &mut Child, group: Pid, grace: Duration, log: &ShardLogger) {
    let _ = killpg(group, Signal::SIGTERM);
    if !wait_group_gone(child, group, grace).await {
        log.log(
            LogLevel::Warn,
            format!("process group {group} ignored SIGTERM for {grace:?}; sending SIGKILL"),
        );
        let _ = killpg(group, Signal::SIGKILL);
        if !wait_group_gone(child, group, KILL_WAIT).await {
            log.log(LogLevel::Error, format!("process group {group} survived SIGKILL"));
        }
    }
}

fn reap_group_zombies(group: Pid) {
    let members = Pid::from_raw(-group.as_raw());
    while let Ok(status) = waitpid(members, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Waits until the leader is reaped and no process is left in `group`, at most `limit`.
async fn wait_group_gone(child: &mut Child, group: Pid, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let reaped = !matches!(child.try_wait(), Ok(None));
        if reaped {
            // Tokio owned the leader and has reaped it; the other members are ours to reap if
            // they were orphaned to this process (see `adopt_orphans`).
            reap_group_zombies(group);
            if group_is_empty(group) {
                return true;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(GROUP_POLL).await;
    }
}

/// Output lines left to keep in the shard log, shared by stdout and stderr.
struct LineBudget {
    left: AtomicUsize,
    suppressed: AtomicUsize,
}

impl LineBudget {
    fn new(max: usize) -> Self {
        LineBudget { left: AtomicUsize::new(max), suppressed: AtomicUsize::new(0) }
    }

    fn take(&self) -> bool {
        let ok = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if !ok {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

/// Streams `reader` into the shard log line by line, holding at most one capped line.
async fn pump(
    reader: impl AsyncRead + Unpin,
    log: ShardLogger,
    level: LogLevel,
    lines: Arc<LineBudget>,
) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    while let Ok(Some(truncated)) = read_capped_line(&mut reader, &mut line, LogLine::MAX_LEN).await
    {
        if lines.take() {
            let mut text = String::from_utf8_lossy(&line).into_owned();
            if truncated {
                text.push_str(" …");
            }
            log.log(level, text);
        }
    }
}

/// Reads one line (without its `\n` / `\r\n`) into `line`, keeping at most `max` bytes and
/// discarding the rest. `None` at end of input; `Some(true)` if the line was cut.
async fn read_capped_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    line.clear();
    let mut truncated = false;
    let mut any = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            break;
        }
        any = true;
        let (chunk, used, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = max.saturating_sub(line.len());
        truncated |= chunk.len() > room;
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(used);
        if done {
            break;
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(any.then_some(truncated))
}
