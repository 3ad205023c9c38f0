//! Per-node profiling of tract plans (scripts/profile-ops.py, `examples/profile.rs`, and the
//! browser page's `?profile=1`, scripts/bench_browser.py --profile): while profiling is on,
//! every network evaluation ([`super::run_f32`]) runs node by node through tract's
//! `run_plan_with_eval`, timing each node and counting its multiply-adds from the op's own cost
//! model, one [`Profile`] per network. The ops are the ones the wasm build runs too (same
//! tract, same optimizer; only the kernels tract-linalg picks differ).

use std::collections::BTreeMap;
use std::sync::Mutex;
use tract_onnx::prelude::*;

/// Time and work of one kind of op (tract's op name) over the evaluations profiled.
#[derive(Debug, Clone, Default)]
pub struct OpKind {
    pub nodes: usize,
    pub calls: usize,
    pub seconds: f64,
    /// Multiply-adds counted by tract's cost model (`Cost::FMA`), summed over calls.
    pub fma: f64,
}

/// One node's totals, for the list of the slowest nodes.
#[derive(Debug, Clone)]
pub struct NodeTime {
    pub name: String,
    pub op: String,
    pub info: String,
    pub seconds: f64,
    pub fma: f64,
}

/// One network's evaluations.
#[derive(Debug, Default)]
pub struct Profile {
    pub evaluations: usize,
    /// Wall time of the evaluations, node timing included.
    pub total_seconds: f64,
    pub kinds: BTreeMap<String, OpKind>,
    pub nodes: BTreeMap<usize, NodeTime>,
}

/// Everything profiled since [`start`], by network ("UNet", "text encoder", …).
#[derive(Debug, Default)]
pub struct Profiles {
    pub networks: BTreeMap<String, Profile>,
}

/// Seconds since some fixed point: the front end's clock (a browser has no `Instant`).
pub type Clock = fn() -> f64;

struct Collecting {
    clock: Clock,
    profiles: Profiles,
}

static PROFILE: Mutex<Option<Collecting>> = Mutex::new(None);

/// Starts collecting: evaluations from now on are profiled, timed by `clock`.
pub fn start(clock: Clock) {
    *PROFILE.lock().unwrap() = Some(Collecting { clock, profiles: Profiles::default() });
}

/// Stops collecting and returns what was collected.
pub fn take() -> Option<Profiles> {
    PROFILE.lock().unwrap().take().map(|c| c.profiles)
}

/// `std::time::Instant` as a [`Clock`], for every target that has it.
pub fn std_clock() -> f64 {
    static ZERO: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    ZERO.get_or_init(std::time::Instant::now).elapsed().as_secs_f64()
}

/// Runs `plan`: as tract runs it, or, while collecting, node by node, timing each node into
/// network `what`'s profile.
pub(crate) fn run(plan: &std::sync::Arc<TypedSimplePlan>, inputs: TVec<TValue>, what: &str) -> TractResult<TVec<TValue>> {
    let Some(clock) = PROFILE.lock().ok().and_then(|p| p.as_ref().map(|c| c.clock)) else {
        return plan.run(inputs);
    };
    let mut state = TypedSimpleState::new(plan)?;
    let mut samples: Vec<(usize, String, String, String, f64, f64)> = Vec::new();
    let start = clock();
    let result = state.run_plan_with_eval(inputs, |ctx, op_state, node, input| {
        let facts: Vec<TypedFact> = input.iter().map(|t| TypedFact::shape_and_dt_of(t)).collect();
        let fact_refs: Vec<&TypedFact> = facts.iter().collect();
        let fma: f64 = node
            .op
            .cost(&fact_refs)
            .ok()
            .map(|costs| {
                costs
                    .iter()
                    .filter(|(c, _)| matches!(c, tract_onnx::tract_core::ops::Cost::FMA(_)))
                    .filter_map(|(_, n)| n.to_i64().ok())
                    .sum::<i64>() as f64
            })
            .unwrap_or(0.0);
        let t = clock();
        let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, input);
        let seconds = clock() - t;
        let info = node.op.info().map(|i| i.join(" ")).unwrap_or_default();
        samples.push((node.id, node.name.clone(), node.op.name().to_string(), info, seconds, fma));
        out
    });
    let total = clock() - start;
    if let Ok(mut guard) = PROFILE.lock() {
        if let Some(c) = guard.as_mut() {
            let p = c.profiles.networks.entry(what.to_string()).or_default();
            p.evaluations += 1;
            p.total_seconds += total;
            let mut seen = std::collections::HashSet::new();
            for (id, name, op, info, seconds, fma) in samples {
                let kind = p.kinds.entry(op.clone()).or_default();
                if seen.insert(id) {
                    kind.nodes += 1;
                }
                kind.calls += 1;
                kind.seconds += seconds;
                kind.fma += fma;
                let node = p.nodes.entry(id).or_insert(NodeTime { name, op, info, seconds: 0.0, fma: 0.0 });
                node.seconds += seconds;
                node.fma += fma;
            }
        }
    }
    result
}

impl Profiles {
    /// Each network's [`Profile::report`] under its name.
    pub fn report(&self, top: usize) -> String {
        self.networks.iter().map(|(name, p)| format!("{name}: {}", p.report(top))).collect::<Vec<_>>().join("\n")
    }
}

impl Profile {
    /// A plain-text table: each op kind's share of the time and its GFLOP/s (2 flops per
    /// multiply-add), then the `top` slowest nodes.
    pub fn report(&self, top: usize) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let timed: f64 = self.kinds.values().map(|k| k.seconds).sum();
        let evals = self.evaluations.max(1) as f64;
        let _ = writeln!(
            out,
            "{} evaluation(s): {:.3} s wall per evaluation, {:.3} s inside ops",
            self.evaluations,
            self.total_seconds / evals,
            timed / evals
        );
        let _ = writeln!(out, "{:<28} {:>6} {:>9} {:>7} {:>9} {:>8}", "op", "nodes", "s/eval", "share", "GFLOP", "GFLOP/s");
        let mut kinds: Vec<_> = self.kinds.iter().collect();
        kinds.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
        let mut fma_total = 0.0;
        for (name, k) in kinds {
            fma_total += k.fma;
            let gflop = 2.0 * k.fma / evals / 1e9;
            let rate = if k.fma > 0.0 && k.seconds > 0.0 { format!("{:.1}", 2.0 * k.fma / k.seconds / 1e9) } else { "-".into() };
            let _ = writeln!(
                out,
                "{:<28} {:>6} {:>9.3} {:>6.1}% {:>9.2} {:>8}",
                name,
                k.nodes,
                k.seconds / evals,
                100.0 * k.seconds / timed.max(1e-12),
                gflop,
                rate
            );
        }
        let _ = writeln!(
            out,
            "{:<28} {:>6} {:>9.3} {:>6.1}% {:>9.2} {:>8.1}",
            "total",
            self.kinds.values().map(|k| k.nodes).sum::<usize>(),
            timed / evals,
            100.0,
            2.0 * fma_total / evals / 1e9,
            2.0 * fma_total / timed.max(1e-12) / 1e9
        );
        if top > 0 {
            let _ = writeln!(out, "\nslowest nodes (s per evaluation, GFLOP/s):");
            let mut nodes: Vec<_> = self.nodes.values().collect();
            nodes.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
            for n in nodes.into_iter().take(top) {
                let rate = if n.fma > 0.0 { format!("{:.1}", 2.0 * n.fma / n.seconds / 1e9) } else { "-".into() };
                let mut info = n.info.clone();
                info.truncate(90);
                let _ = writeln!(out, "{:>8.4} {:>6} {:<22} {} {}", n.seconds / evals, rate, n.op, n.name, info);
            }
        }
        out
    }
}
