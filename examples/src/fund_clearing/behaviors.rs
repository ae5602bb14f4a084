//! The `fund.*` behaviors: one [`FundBehavior`] per name, its [`Kind`] choosing the steps and
//! the simulated work. Every figure is derived from a hash of (business date, shard key, what
//! is being computed), so the same shard on the same date always reports the same numbers,
//! and figures that two tasks share (a distributor's application count, a product's NAV)
//! agree between them.

use std::sync::Arc;
use std::time::Duration;

use taskflow_core::behavior::{BehaviorError, ShardContext, TaskBehavior};

use super::FundOptions;
use super::failure::Fault;

/// Which `fund.*` behavior a [`FundBehavior`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    DayInit,
    ImportQuotes,
    ImportApplications,
    ValidateApplications,
    NavCalculation,
    MoneyFundIncome,
    CustodyNavCheck,
    ConfirmTrades,
    RegisterShares,
    DividendDistribution,
    FeeCalculation,
    ShareClassFeeSplit,
    Clearing,
    Settlement,
    ExportConfirmations,
    Reconciliation,
}

impl Kind {
    /// Every kind, in flow order.
    pub(crate) const ALL: [Kind; 16] = [
        Kind::DayInit,
        Kind::ImportQuotes,
        Kind::ImportApplications,
        Kind::ValidateApplications,
        Kind::NavCalculation,
        Kind::MoneyFundIncome,
        Kind::CustodyNavCheck,
        Kind::ConfirmTrades,
        Kind::RegisterShares,
        Kind::DividendDistribution,
        Kind::FeeCalculation,
        Kind::ShareClassFeeSplit,
        Kind::Clearing,
        Kind::Settlement,
        Kind::ExportConfirmations,
        Kind::Reconciliation,
    ];

    /// The registered name, e.g. `fund.confirm_trades`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::DayInit => "fund.day_init",
            Kind::ImportQuotes => "fund.import_quotes",
            Kind::ImportApplications => "fund.import_applications",
            Kind::ValidateApplications => "fund.validate_applications",
            Kind::NavCalculation => "fund.nav_calculation",
            Kind::MoneyFundIncome => "fund.money_fund_income",
            Kind::CustodyNavCheck => "fund.custody_nav_check",
            Kind::ConfirmTrades => "fund.confirm_trades",
            Kind::RegisterShares => "fund.register_shares",
            Kind::DividendDistribution => "fund.dividend_distribution",
            Kind::FeeCalculation => "fund.fee_calculation",
            Kind::ShareClassFeeSplit => "fund.share_class_fee_split",
            Kind::Clearing => "fund.clearing",
            Kind::Settlement => "fund.settlement",
            Kind::ExportConfirmations => "fund.export_confirmations",
            Kind::Reconciliation => "fund.reconciliation",
        }
    }

    fn steps(self) -> &'static [&'static str] {
        match self {
            Kind::DayInit => &["check_calendar", "open_day", "snapshot_reference"],
            Kind::ImportQuotes => &["fetch_quotes", "fetch_bond_valuations", "store_quotes"],
            Kind::ImportApplications => &["fetch_file", "parse", "store_applications"],
            Kind::ValidateApplications => {
                &["load_applications", "check_accounts", "check_limits", "mark_valid"]
            }
            Kind::NavCalculation => &["load_positions", "price", "accrue_fees", "publish_nav"],
            Kind::MoneyFundIncome => &["load_balances", "accrue_income", "post_income"],
            Kind::CustodyNavCheck => &["load_nav", "fetch_custodian_nav", "compare"],
            Kind::ConfirmTrades => &["load_applications", "validate", "confirm", "write_shares"],
            Kind::RegisterShares => &["load_confirmations", "update_register", "snapshot_holdings"],
            Kind::DividendDistribution => &["find_plans", "compute_dividends", "post_dividends"],
            Kind::FeeCalculation => &["load_nav", "accrue_fees", "post_fees"],
            Kind::ShareClassFeeSplit => &["load_fund_fee", "split", "post_class_fees"],
            Kind::Clearing => &["net_amounts", "fees", "post_clearing"],
            Kind::Settlement => &["load_clearing", "build_instructions", "send_instructions"],
            Kind::ExportConfirmations => &["render", "checksum", "deliver"],
            Kind::Reconciliation => {
                &["reconcile_shares", "reconcile_cash", "reconcile_files", "report"]
            }
        }
    }

    /// What a rollback undoes, for behaviors whose effects can be undone.
    fn reversal(self) -> Option<&'static str> {
        Some(match self {
            Kind::ImportApplications => "the imported applications",
            Kind::MoneyFundIncome => "the income accruals",
            Kind::ConfirmTrades => "the trade confirmations",
            Kind::RegisterShares => "the share register updates",
            Kind::DividendDistribution => "the dividend postings",
            Kind::FeeCalculation => "the fee accruals",
            Kind::ShareClassFeeSplit => "the share-class fee postings",
            Kind::Clearing => "the clearing results",
            Kind::Settlement => "the settlement instructions (cancel messages sent)",
            _ => return None,
        })
    }
}

/// One `fund.*` behavior: deterministic simulated work, paced by
/// [`FundOptions::step_delay`], with faults from [`FundOptions::failures`].
pub(crate) struct FundBehavior {
    kind: Kind,
    options: Arc<FundOptions>,
}

impl FundBehavior {
    pub(crate) fn new(kind: Kind, options: Arc<FundOptions>) -> Self {
        FundBehavior { kind, options }
    }

    /// Applies the failure plan to `step_name` of this attempt.
    async fn inject(&self, ctx: &ShardContext, step_name: &str) -> Result<(), BehaviorError> {
        let fault = self.options.failures.fault(
            ctx.task().as_str(),
            ctx.shard().as_str(),
            step_name,
            ctx.attempt(),
        );
        match fault {
            None => Ok(()),
            Some(Fault::Fail) => {
                let message =
                    format!("injected failure at {step_name} on attempt {}", ctx.attempt());
                ctx.warn(message.clone());
                Err(BehaviorError::new(message))
            }
            Some(Fault::Hang) => {
                ctx.warn(format!("injected hang at {step_name}: waiting until cancelled"));
                ctx.cancelled().await;
                Err(BehaviorError::new(format!("stopped while hanging at {step_name}")))
            }
            Some(Fault::Stuck(secs)) => {
                ctx.warn(format!("injected blocking call at {step_name}: {secs} s, deaf to stops"));
                let block = || std::thread::sleep(std::time::Duration::from_secs(secs.into()));
                // Blocks this task's thread on purpose; `block_in_place` moves the runtime's
                // other work off it (a current-thread runtime just blocks).
                match tokio::runtime::Handle::current().runtime_flavor() {
                    tokio::runtime::RuntimeFlavor::MultiThread => {
                        tokio::task::block_in_place(block)
                    }
                    _ => block(),
                }
                Ok(())
            }
        }
    }

    fn post(&self, ctx: &ShardContext, postings: &[(String, i64)]) {
        let Some(ledger) = &self.options.ledger else { return };
        for (entry, amount) in postings {
            let key = format!("{}/{entry}", ctx.idempotency_key());
            if !ledger.post(&key, *amount) {
                ctx.debug(format!("{key} was already posted; not posted again"));
            }
        }
    }
}

impl TaskBehavior for FundBehavior {
    fn steps(&self) -> &[&str] {
        self.kind.steps()
    }

    async fn run_step(&self, ctx: &mut ShardContext, step: usize) -> Result<(), BehaviorError> {
        let name = self.kind.steps()[step];
        self.inject(ctx, name).await?;
        let plan = plan(self.kind, ctx, step);
        pace(ctx, self.options.step_delay, plan.units).await?;
        self.post(ctx, &plan.postings);
        for line in plan.lines {
            ctx.info(line);
        }
        Ok(())
    }

    async fn rollback(&self, ctx: &mut ShardContext) -> Result<(), BehaviorError> {
        self.inject(ctx, "rollback").await?;
        let Some(what) = self.kind.reversal() else {
            ctx.info(format!("nothing to undo: {} has no effects to reverse", self.kind.name()));
            return Ok(());
        };
        let key = ctx.idempotency_key();
        ctx.info(format!(
            "reversing {what} of {key} ({} of {} steps had completed)",
            ctx.completed_steps(),
            self.kind.steps().len()
        ));
        pace(ctx, self.options.step_delay, 1).await?;
        if let Some(ledger) = &self.options.ledger {
            let removed = ledger.reverse(&format!("{key}/"));
            let total: i64 = removed.iter().map(|(_, amount)| amount).sum();
            ctx.info(format!("reversed {} postings netting {}", removed.len(), yuan(total)));
        }
        Ok(())
    }
}

/// What one step does: how many units of work (for progress), the log lines it writes when
/// done and the ledger postings it makes (entry name → amount).
struct StepPlan {
    units: u64,
    lines: Vec<String>,
    postings: Vec<(String, i64)>,
}

impl StepPlan {
    fn new(units: u64, line: String) -> Self {
        StepPlan { units, lines: vec![line], postings: Vec::new() }
    }

    fn posting(mut self, entry: impl Into<String>, amount: i64) -> Self {
        self.postings.push((entry.into(), amount));
        self
    }
}

/// The simulated work of step `step` of a `kind` shard.
fn plan(kind: Kind, ctx: &ShardContext, step: usize) -> StepPlan {
    let sim = Sim { ctx };
    let shard = ctx.shard().as_str();
    let date = ctx.date();
    match (kind, step) {
        (Kind::DayInit, 0) => {
            let dates: Vec<String> = ctx.covered_dates().iter().map(|d| d.to_string()).collect();
            StepPlan::new(1, format!("business date {date} covers {}", dates.join(", ")))
        }
        (Kind::DayInit, 1) => {
            StepPlan::new(1, format!("business day {date} opened; applications cut off at 15:00"))
        }
        (Kind::DayInit, _) => StepPlan::new(
            3,
            format!("reference data snapshot {:016x} taken", sim.hash("reference")),
        ),

        (Kind::ImportQuotes, 0) => {
            let n = sim.quotes();
            StepPlan::new(n, format!("fetched {n} exchange closing prices"))
        }
        (Kind::ImportQuotes, 1) => {
            let n = sim.bonds();
            StepPlan::new(n, format!("fetched {n} bond valuations from the central depository"))
        }
        (Kind::ImportQuotes, _) => {
            let n = sim.quotes() + sim.bonds();
            StepPlan::new(n, format!("stored {n} quotes for {date}"))
        }

        (Kind::ImportApplications, 0) => {
            let file = application_file(ctx);
            let bytes = sim.applications() * 212;
            StepPlan::new(1, format!("fetched {file} ({bytes} bytes)"))
        }
        (Kind::ImportApplications, 1) => {
            let (rows, subs, reds) = sim.application_mix();
            StepPlan::new(
                rows,
                format!(
                    "parsed {rows} applications: {subs} purchases, {reds} redemptions, {} conversions",
                    rows - subs - reds
                ),
            )
        }
        (Kind::ImportApplications, _) => {
            let rows = sim.applications();
            StepPlan::new(rows, format!("stored {rows} applications of distributor {shard}"))
        }

        (Kind::ValidateApplications, 0) => {
            let rows = sim.applications();
            StepPlan::new(rows, format!("loaded {rows} applications"))
        }
        (Kind::ValidateApplications, 1) => {
            let rows = sim.applications();
            let unknown = sim.rejected_accounts();
            StepPlan::new(rows, format!("checked {rows} accounts: {unknown} unknown"))
        }
        (Kind::ValidateApplications, 2) => {
            let over = sim.over_limit();
            StepPlan::new(sim.applications(), format!("{over} applications over the limit"))
        }
        (Kind::ValidateApplications, _) => {
            let rows = sim.applications();
            let rejected = sim.rejected_accounts() + sim.over_limit();
            StepPlan::new(rows, format!("{} valid, {rejected} rejected", rows - rejected))
        }

        (Kind::NavCalculation, 0) => {
            let n = sim.positions();
            StepPlan::new(n, format!("loaded {n} positions of {shard}"))
        }
        (Kind::NavCalculation, 1) => {
            StepPlan::new(sim.positions(), format!("valued assets at {}", yuan(sim.assets())))
        }
        (Kind::NavCalculation, 2) => {
            StepPlan::new(1, format!("accrued fees of {}", yuan(sim.fees().total())))
        }
        (Kind::NavCalculation, _) => {
            StepPlan::new(1, format!("published NAV {} for {shard}", nav_text(sim.nav())))
        }

        (Kind::MoneyFundIncome, 0) => {
            StepPlan::new(1, format!("loaded balances: {}", yuan(sim.money_balance())))
        }
        (Kind::MoneyFundIncome, 1) => {
            // One accrual per covered calendar date: on the business day before a weekend or
            // holiday the fund also earns the days the market is shut.
            let mut plan = StepPlan {
                units: ctx.covered_dates().len() as u64,
                lines: Vec::new(),
                postings: Vec::new(),
            };
            for d in ctx.covered_dates() {
                let per_10k = sim.income_per_10k(&d.to_string());
                let income = sim.money_balance() * per_10k / 100_000_000;
                plan.lines.push(format!(
                    "{d}: income per 10,000 units {}, accrued {}",
                    nav_text(per_10k),
                    yuan(income)
                ));
                plan = plan.posting(format!("income/{d}"), income);
            }
            plan
        }
        (Kind::MoneyFundIncome, _) => {
            let days = ctx.covered_dates().len();
            let total: i64 = ctx
                .covered_dates()
                .iter()
                .map(|d| sim.money_balance() * sim.income_per_10k(&d.to_string()) / 100_000_000)
                .sum();
            let yield_milli_pct = sim.income_per_10k(&date.to_string()) * 365 / 1000;
            StepPlan::new(
                1,
                format!(
                    "posted {days} day(s) of income, {}; 7-day annualised yield {}.{:03}%",
                    yuan(total),
                    yield_milli_pct / 1000,
                    yield_milli_pct % 1000
                ),
            )
        }

        (Kind::CustodyNavCheck, 0) => {
            StepPlan::new(1, format!("our NAV for {shard}: {}", nav_text(sim.nav())))
        }
        (Kind::CustodyNavCheck, 1) => {
            StepPlan::new(1, format!("custodian NAV for {shard}: {}", nav_text(sim.nav())))
        }
        (Kind::CustodyNavCheck, _) => {
            StepPlan::new(1, format!("NAV of {shard} agrees with the custodian"))
        }

        (Kind::ConfirmTrades, 0) => {
            let n = sim.trades();
            StepPlan::new(n, format!("loaded {n} applications for {shard}"))
        }
        (Kind::ConfirmTrades, 1) => {
            StepPlan::new(sim.trades(), format!("{} applications pass validation", sim.trades()))
        }
        (Kind::ConfirmTrades, 2) => StepPlan::new(
            sim.trades(),
            format!(
                "confirmed at NAV {}: purchases {}, redemptions {}",
                nav_text(sim.nav()),
                yuan(sim.purchases()),
                yuan(sim.redemptions())
            ),
        )
        .posting("purchases", sim.purchases())
        .posting("redemptions", -sim.redemptions()),
        (Kind::ConfirmTrades, _) => {
            let shares = sim.net_shares();
            StepPlan::new(sim.trades(), format!("wrote net shares {}", units_text(shares)))
        }

        (Kind::RegisterShares, 0) => {
            StepPlan::new(sim.trades(), format!("loaded {} confirmations", sim.trades()))
        }
        (Kind::RegisterShares, 1) => {
            let shares = sim.net_shares();
            StepPlan::new(
                sim.trades(),
                format!("register of {shard} changed by {} units", units_text(shares)),
            )
            .posting("shares", shares)
        }
        (Kind::RegisterShares, _) => {
            let holders = sim.between("holders", 1_000, 90_000) as u64;
            StepPlan::new(1, format!("holdings snapshot: {holders} holders"))
        }

        (Kind::DividendDistribution, 0) => match sim.dividend_per_10() {
            Some(per_10) => {
                StepPlan::new(1, format!("record date of a plan: {} per 10 units", yuan(per_10)))
            }
            None => StepPlan::new(1, format!("no distribution plan has {date} as record date")),
        },
        (Kind::DividendDistribution, 1) => match sim.dividend_per_10() {
            Some(_) => StepPlan::new(
                sim.between("holders", 1_000, 90_000) as u64,
                format!("dividends of {}", yuan(sim.dividend_total())),
            ),
            None => StepPlan::new(1, "nothing to compute".to_owned()),
        },
        (Kind::DividendDistribution, _) => match sim.dividend_per_10() {
            Some(_) => {
                StepPlan::new(1, format!("posted dividends of {}", yuan(sim.dividend_total())))
                    .posting("dividends", sim.dividend_total())
            }
            None => StepPlan::new(1, "nothing to post".to_owned()),
        },

        (Kind::FeeCalculation, 0) => {
            StepPlan::new(1, format!("assets of {shard}: {}", yuan(sim.assets())))
        }
        (Kind::FeeCalculation, 1) => {
            let fees = sim.fees();
            StepPlan::new(
                3,
                format!(
                    "management {}, custody {}, sales service {}",
                    yuan(fees.management),
                    yuan(fees.custody),
                    yuan(fees.service)
                ),
            )
        }
        (Kind::FeeCalculation, _) => {
            let fees = sim.fees();
            StepPlan::new(1, format!("posted fee accruals of {}", yuan(fees.total())))
                .posting("management_fee", fees.management)
                .posting("custody_fee", fees.custody)
                .posting("service_fee", fees.service)
        }

        (Kind::ShareClassFeeSplit, 0) => {
            StepPlan::new(1, format!("class {shard} holds {}% of its fund", sim.class_weight()))
        }
        (Kind::ShareClassFeeSplit, 1) => StepPlan::new(
            1,
            format!("sales-service fee of class {shard}: {}", yuan(sim.class_fee())),
        ),
        (Kind::ShareClassFeeSplit, _) => {
            StepPlan::new(1, format!("posted class fee {}", yuan(sim.class_fee())))
                .posting("class_fee", sim.class_fee())
        }

        (Kind::Clearing, 0) => {
            let products = ctx.scope().len();
            StepPlan::new(
                products as u64,
                format!("netted {products} product(s) sold by {shard}: net {}", yuan(sim.net())),
            )
        }
        (Kind::Clearing, 1) => StepPlan::new(
            ctx.scope().len() as u64,
            format!("sales commission owed to {shard}: {}", yuan(sim.commission())),
        ),
        (Kind::Clearing, _) => {
            let mut plan = StepPlan::new(
                ctx.scope().len() as u64,
                format!("posted clearing of {shard}: {}", yuan(sim.net() - sim.commission())),
            );
            for item in ctx.scope() {
                let product = item.product.as_deref().unwrap_or("*");
                plan = plan.posting(format!("net/{product}"), sim.net_of(product));
            }
            plan.posting("commission", -sim.commission())
        }

        (Kind::Settlement, 0) => {
            StepPlan::new(1, format!("clearing result of {shard}: {}", yuan(sim.settlement())))
        }
        (Kind::Settlement, 1) => StepPlan::new(
            1,
            format!("instruction STL-{}-{shard} for {}", compact(ctx), yuan(sim.settlement())),
        ),
        (Kind::Settlement, _) => {
            StepPlan::new(1, format!("sent instruction STL-{}-{shard}", compact(ctx)))
                .posting("settlement", sim.settlement())
        }

        (Kind::ExportConfirmations, 0) => {
            let rows = sim.applications();
            StepPlan::new(rows, format!("rendered {rows} confirmations into {}", export_file(ctx)))
        }
        (Kind::ExportConfirmations, 1) => {
            let sum = fnv(&[&export_file(ctx), &sim.applications().to_string()]);
            StepPlan::new(1, format!("checksum {sum:016x}"))
        }
        (Kind::ExportConfirmations, _) => {
            StepPlan::new(1, format!("delivered {} to distributor {shard}", export_file(ctx)))
        }

        (Kind::Reconciliation, 0) => {
            let n = sim.between("recon-products", 20, 30);
            StepPlan::new(n as u64, format!("shares: {n} products balance with the register"))
        }
        (Kind::Reconciliation, 1) => {
            StepPlan::new(1, format!("cash: {} in, 0.00 unmatched", yuan(sim.money_balance())))
        }
        (Kind::Reconciliation, 2) => {
            StepPlan::new(1, "files: every confirmation file delivered".to_owned())
        }
        (Kind::Reconciliation, _) => StepPlan::new(1, format!("day {date} reconciled: 0 breaks")),
    }
}

/// Sleeps `delay` in up to four slices, reporting progress after each, and returns early with
/// an error if the shard is cancelled.
async fn pace(ctx: &ShardContext, delay: Duration, units: u64) -> Result<(), BehaviorError> {
    let total = units.max(1);
    let ticks = total.min(4);
    let slice = delay / ticks as u32;
    for tick in 1..=ticks {
        if slice.is_zero() {
            if ctx.is_cancelled() {
                return Err(BehaviorError::new("stopped"));
            }
        } else {
            tokio::select! {
                () = ctx.cancelled() => return Err(BehaviorError::new("stopped")),
                () = tokio::time::sleep(slice) => {}
            }
        }
        ctx.progress(total * tick / ticks, total);
    }
    Ok(())
}

/// Deterministic figures for one shard on one date.
struct Sim<'a> {
    ctx: &'a ShardContext,
}

struct Fees {
    management: i64,
    custody: i64,
    service: i64,
}

impl Fees {
    fn total(&self) -> i64 {
        self.management + self.custody + self.service
    }
}

impl Sim<'_> {
    fn hash(&self, what: &str) -> u64 {
        fnv(&[&self.ctx.date().to_string(), self.ctx.shard().as_str(), what])
    }

    /// A figure in `lo..=hi`.
    fn between(&self, what: &str, lo: i64, hi: i64) -> i64 {
        let span = (hi - lo + 1) as u64;
        lo + (self.hash(what) % span) as i64
    }

    fn quotes(&self) -> u64 {
        self.between("quotes", 4_800, 5_400) as u64
    }

    fn bonds(&self) -> u64 {
        self.between("bonds", 900, 1_300) as u64
    }

    /// A distributor's applications today (shared by import, validation and export).
    fn applications(&self) -> u64 {
        self.between("applications", 40, 400) as u64
    }

    fn application_mix(&self) -> (u64, u64, u64) {
        let rows = self.applications();
        let subs = rows * self.between("purchase-share", 40, 60) as u64 / 100;
        let reds = (rows - subs) * self.between("redemption-share", 50, 90) as u64 / 100;
        (rows, subs, reds)
    }

    fn rejected_accounts(&self) -> u64 {
        self.between("unknown-accounts", 0, 3) as u64
    }

    fn over_limit(&self) -> u64 {
        self.between("over-limit", 0, 2) as u64
    }

    fn positions(&self) -> u64 {
        self.between("positions", 80, 600) as u64
    }

    /// Net assets in fen (shared by NAV, fees).
    fn assets(&self) -> i64 {
        self.between("assets", 10_000_000_000, 500_000_000_000)
    }

    /// NAV per unit in 1/10,000 yuan; money funds (codes 52xxxx here) keep 1.0000.
    fn nav(&self) -> i64 {
        if self.ctx.shard().as_str().starts_with("52") {
            10_000
        } else {
            self.between("nav", 8_500, 13_500)
        }
    }

    fn fees(&self) -> Fees {
        // Annual rates 1.20 %, 0.20 % and 0.40 %, accrued for one day.
        let daily = |bp: i64| self.assets() * bp / 10_000 / 365;
        Fees { management: daily(120), custody: daily(20), service: daily(40) }
    }

    fn money_balance(&self) -> i64 {
        self.between("balance", 100_000_000_000, 2_000_000_000_000)
    }

    /// Income per 10,000 units for calendar date `day`, in 1/10,000 yuan.
    fn income_per_10k(&self, day: &str) -> i64 {
        self.between(&format!("income/{day}"), 3_000, 5_500)
    }

    fn trades(&self) -> u64 {
        self.between("trades", 20, 900) as u64
    }

    fn purchases(&self) -> i64 {
        self.between("purchases", 100_000_000, 5_000_000_000)
    }

    fn redemptions(&self) -> i64 {
        self.between("redemptions", 50_000_000, 4_000_000_000)
    }

    /// Net shares issued, in 0.01 units: money in fen / NAV (1/10,000 yuan).
    fn net_shares(&self) -> i64 {
        (self.purchases() - self.redemptions()) * 10_000 / self.nav()
    }

    fn dividend_per_10(&self) -> Option<i64> {
        self.hash("dividend-plan").is_multiple_of(4).then(|| self.between("dividend", 5, 80))
    }

    fn dividend_total(&self) -> i64 {
        let units = self.between("units", 10_000_000, 900_000_000);
        self.dividend_per_10().map_or(0, |per_10| units * per_10 / 10)
    }

    fn class_weight(&self) -> i64 {
        self.between("class-weight", 10, 60)
    }

    fn class_fee(&self) -> i64 {
        self.fees().service * self.class_weight() / 100
    }

    fn net_of(&self, product: &str) -> i64 {
        self.between(&format!("net/{product}"), -500_000_000, 500_000_000)
    }

    fn net(&self) -> i64 {
        self.ctx.scope().iter().map(|i| self.net_of(i.product.as_deref().unwrap_or("*"))).sum()
    }

    fn commission(&self) -> i64 {
        self.between("commission", 10_000, 5_000_000)
    }

    fn settlement(&self) -> i64 {
        self.between("settlement", -800_000_000, 800_000_000)
    }
}

/// FNV-1a over the parts, with a separator byte so `("ab", "c")` and `("a", "bc")` differ.
/// Stable across Rust versions and platforms, unlike `DefaultHasher`.
pub(crate) fn fnv(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Fen as yuan with thousands separators: `-1,234,567.89`.
pub(crate) fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", thousands(abs / 100), abs % 100)
}

/// Hundredths of a unit as units: `1,234.56`.
fn units_text(hundredths: i64) -> String {
    yuan(hundredths)
}

/// A per-unit value in 1/10,000 yuan: `1.0235`.
fn nav_text(value: i64) -> String {
    format!("{}.{:04}", value / 10_000, value % 10_000)
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The business date as `YYYYMMDD`, as exchange files spell it.
fn compact(ctx: &ShardContext) -> String {
    ctx.date().to_string().replace('-', "")
}

/// The applications file of a distributor shard, from the `file_pattern` parameter.
fn application_file(ctx: &ShardContext) -> String {
    let pattern =
        ctx.params().get("file_pattern").unwrap_or("{distributor}_{date}_applications.txt");
    pattern.replace("{distributor}", ctx.shard().as_str()).replace("{date}", &compact(ctx))
}

/// The confirmation file of a distributor shard, from the `format` and `encoding` parameters.
fn export_file(ctx: &ShardContext) -> String {
    let format = ctx.params().get("format").unwrap_or("openfund-2.1");
    let encoding = ctx.params().get("encoding").unwrap_or("utf-8");
    format!("{}_{}_confirmations.{format}.{encoding}.txt", ctx.shard(), compact(ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_formatted_with_separators() {
        assert_eq!(yuan(0), "0.00");
        assert_eq!(yuan(123_456_789), "1,234,567.89");
        assert_eq!(yuan(-5), "-0.05");
        assert_eq!(nav_text(10_235), "1.0235");
    }

    #[test]
    fn fnv_is_stable_and_separates_parts() {
        assert_eq!(fnv(&[]), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fnv(&["ab", "c"]), fnv(&["a", "bc"]));
    }

    #[test]
    fn every_kind_has_steps_and_a_fund_name() {
        for kind in Kind::ALL {
            assert!(!kind.steps().is_empty());
            assert!(kind.name().starts_with("fund."));
        }
    }
}
