//! petrel-ovn's Prometheus metrics (`petrel-ovn --metrics-addr HOST:PORT`,
//! then `GET /metrics`).
//!
//! Two kinds of numbers, kept the way each is produced:
//!
//! - events (a compile, a publish) are recorded when they happen, by the
//!   [`crate::install::Installer`] holding a [`Metrics`]: compile time
//!   histograms split into `full` (no logical flow came from the compiler's
//!   cache) and `incremental` compiles, flows compiled, publishes and their
//!   failures;
//! - state is read at each scrape: the Southbound session's counters and
//!   connection (through a [`SessionHandle`]), the `nb_cfg` the Southbound
//!   asks for and the one this chassis acknowledged (from the replica: what
//!   the Southbound actually holds), and the agent's counters as of its
//!   last step.
//!
//! Scrapes run on the endpoint's own threads (`petrel_obs::http`); they take
//! the replica's read lock and the state mutex only briefly, never across
//! an `.await` of the agent.

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use petrel_obs::http::{HttpError, MetricsServer, Render};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::chassis::AgentStats;
use crate::lflow::compile::CompileStats;
use crate::ovsdb::SessionHandle;
use crate::sb::{ChassisPrivate, SbGlobal, SbTable as _};

/// `kind="full"` or `kind="incremental"`.
type KindLabel = [(&'static str, &'static str); 1];

fn compile_buckets() -> Histogram {
    // 100 µs .. 2.4 s: an incremental compile of a few flows up to a full
    // compile of a large Southbound.
    Histogram::new(exponential_buckets(0.0001, 2.5, 12))
}

/// What the scrape-time collector reads.
#[derive(Debug, Default)]
struct State {
    session: Option<SessionHandle>,
    agent: Option<AgentStats>,
}

/// petrel-ovn's metrics: cheap to clone, shared by the installer, the
/// agent and the `/metrics` endpoint.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    state: Arc<Mutex<State>>,
    compile_seconds: Family<KindLabel, Histogram, fn() -> Histogram>,
    flows_compiled: Counter,
    logical_flows: Gauge,
    rules: Gauge,
    refusals: Gauge,
    datapaths: Gauge,
    published: Counter,
    publish_errors: Counter,
    publish_seconds: Histogram,
    generation: Gauge,
}

impl Metrics {
    /// Metrics of the chassis `system_id` (whose `Chassis_Private` row
    /// holds the acknowledged `nb_cfg`).
    pub fn new(system_id: &str) -> Self {
        let mut r = Registry::default();
        let compile_seconds: Family<KindLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(compile_buckets);
        r.register(
            "petrel_ovn_compile_duration_seconds",
            "Time to compile the logical flows into tables, by kind: full (no flow from the cache) or incremental",
            compile_seconds.clone(),
        );
        let flows_compiled = Counter::default();
        r.register(
            "petrel_ovn_flows_compiled",
            "Logical flows compiled (not taken from the compiler's cache)",
            flows_compiled.clone(),
        );
        let logical_flows = Gauge::default();
        r.register(
            "petrel_ovn_logical_flows",
            "Logical flows of the local datapaths, last compile",
            logical_flows.clone(),
        );
        let rules = Gauge::default();
        r.register("petrel_ovn_rules", "Rules in the tables of the last compile", rules.clone());
        let refusals = Gauge::default();
        r.register(
            "petrel_ovn_refusals",
            "Logical flows and ports the last compile refused (their packets are dropped as unsupported)",
            refusals.clone(),
        );
        let datapaths = Gauge::default();
        r.register("petrel_ovn_datapaths", "Datapaths in the tables of the last compile", datapaths.clone());
        let published = Counter::default();
        r.register("petrel_ovn_snapshots_published", "Table snapshots petreld accepted", published.clone());
        let publish_errors = Counter::default();
        r.register(
            "petrel_ovn_snapshot_publish_errors",
            "Table snapshots that could not be published (petreld unreachable or refusing)",
            publish_errors.clone(),
        );
        let publish_seconds = Histogram::new(exponential_buckets(0.0001, 2.5, 12));
        r.register(
            "petrel_ovn_publish_duration_seconds",
            "Time to convert and publish a snapshot to petreld",
            publish_seconds.clone(),
        );
        let generation = Gauge::default();
        r.register(
            "petrel_ovn_tables_generation",
            "Generation petreld returned for the last snapshot published",
            generation.clone(),
        );
        let state = Arc::new(Mutex::new(State::default()));
        r.register_collector(Box::new(StateCollector { state: Arc::clone(&state), system_id: system_id.to_owned() }));
        Metrics {
            inner: Arc::new(Inner {
                registry: r,
                state,
                compile_seconds,
                flows_compiled,
                logical_flows,
                rules,
                refusals,
                datapaths,
                published,
                publish_errors,
                publish_seconds,
                generation,
            }),
        }
    }

    /// Reports this Southbound session at each scrape.
    pub fn set_session(&self, session: SessionHandle) {
        self.state().session = Some(session);
    }

    /// The agent's counters as of now (called after each agent step).
    pub fn set_agent(&self, stats: &AgentStats) {
        self.state().agent = Some(stats.clone());
    }

    /// A compile took `elapsed`, with these numbers and `n_refused` refusals.
    pub fn compiled(&self, stats: &CompileStats, elapsed: Duration, n_refused: usize) {
        let i = &self.inner;
        let kind = if stats.n_compiled == stats.n_flows { "full" } else { "incremental" };
        i.compile_seconds.get_or_create(&[("kind", kind)]).observe(elapsed.as_secs_f64());
        i.flows_compiled.inc_by(u64::try_from(stats.n_compiled).unwrap_or(u64::MAX));
        let g = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        i.logical_flows.set(g(stats.n_flows));
        i.rules.set(g(stats.n_rules));
        i.refusals.set(g(n_refused));
        i.datapaths.set(g(stats.n_datapaths));
    }

    /// petreld accepted a snapshot as `generation`, after `elapsed`.
    pub fn published(&self, generation: u64, elapsed: Duration) {
        let i = &self.inner;
        i.published.inc();
        i.publish_seconds.observe(elapsed.as_secs_f64());
        i.generation.set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// A snapshot could not be published.
    pub fn publish_failed(&self) {
        self.inner.publish_errors.inc();
    }

    /// The Prometheus text of everything, and its `Content-Type`.
    pub fn render(&self) -> (String, &'static str) {
        petrel_dataplane::metrics::encode(&self.inner.registry)
    }

    /// Serves [`Metrics::render`] at `http://ADDR/metrics` until the
    /// returned server is dropped.
    ///
    /// # Errors
    /// The address does not resolve or cannot be bound.
    pub fn serve(&self, addr: &str) -> Result<MetricsServer, HttpError> {
        let m = self.clone();
        let render: Render = Arc::new(move || m.render());
        MetricsServer::start(addr, render)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Reads the session, the replica and the agent's counters at each scrape.
#[derive(Debug)]
struct StateCollector {
    state: Arc<Mutex<State>>,
    system_id: String,
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: N,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for StateCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (session, agent) = {
            let s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (s.session.clone(), s.agent.clone())
        };
        if let Some(h) = session {
            let s = h.stats();
            let e = &mut enc;
            gauge(
                e,
                "petrel_ovn_southbound_connected",
                "1 while a Southbound connection is monitoring, else 0.",
                u64::from(s.remote.is_some()),
            )?;
            counter(
                e,
                "petrel_ovn_southbound_connects",
                "Southbound connections that reached monitoring.",
                s.n_connects,
            )?;
            counter(
                e,
                "petrel_ovn_southbound_disconnects",
                "Failed Southbound connects and lost connections.",
                s.n_disconnects,
            )?;
            counter(e, "petrel_ovn_southbound_full_dumps", "Monitors that started with a full dump.", s.n_full_dumps)?;
            counter(
                e,
                "petrel_ovn_southbound_resumes",
                "Monitors resumed from the last transaction (monitor_cond_since found).",
                s.n_resumes,
            )?;
            counter(e, "petrel_ovn_southbound_updates", "Southbound update notifications applied.", s.n_updates)?;
            if let Some(d) = s.last_sync {
                gauge(
                    e,
                    "petrel_ovn_southbound_last_sync_duration_seconds",
                    "Time from connect to the monitor reply applied, last connect.",
                    d.as_secs_f64(),
                )?;
            }
            if let Some(t) = s.last_update_at.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
                gauge(
                    e,
                    "petrel_ovn_southbound_last_update_timestamp_seconds",
                    "When the replica last took in Southbound state (monitor reply or update), Unix time.",
                    t.as_secs_f64(),
                )?;
            }
            let (wanted, acked) = {
                let r = h.replica();
                let wanted = SbGlobal::all(&r).first().map(|g| g.nb_cfg);
                let acked = ChassisPrivate::all(&r).into_iter().find(|c| c.name == self.system_id).map(|c| c.nb_cfg);
                (wanted, acked)
            };
            if let Some(n) = wanted {
                gauge(e, "petrel_ovn_nb_cfg", "SB_Global.nb_cfg: the configuration sequence number to reach.", n)?;
            }
            if let Some(n) = acked {
                gauge(
                    e,
                    "petrel_ovn_nb_cfg_acknowledged",
                    "nb_cfg this chassis acknowledged in Chassis_Private (in force in petreld).",
                    n,
                )?;
            }
        }
        if let Some(a) = agent {
            let e = &mut enc;
            counter(e, "petrel_ovn_claims", "Logical ports claimed.", a.n_claims)?;
            counter(e, "petrel_ovn_releases", "Logical ports released.", a.n_releases)?;
            counter(e, "petrel_ovn_southbound_transactions", "Southbound transactions committed.", a.n_txns)?;
            counter(
                e,
                "petrel_ovn_southbound_transaction_errors",
                "Southbound transactions that failed.",
                a.n_txn_errors,
            )?;
            gauge(
                e,
                "petrel_ovn_local_datapaths",
                "Datapaths reachable from local ports (the monitored scope).",
                a.n_local_datapaths,
            )?;
            if let Some(l) = a.claim_latency_last {
                gauge(
                    e,
                    "petrel_ovn_claim_latency_seconds",
                    "From the change that required a claim to its commit, last claim.",
                    l.as_secs_f64(),
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn test_events_are_recorded_by_kind_and_encoded_as_prometheus_text() {
        let m = Metrics::new("hv1");
        let (empty, ctype) = m.render();
        assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
        assert!(!empty.contains("southbound"), "no session, no session metrics: {empty}");
        let full = CompileStats { n_datapaths: 2, n_flows: 100, n_compiled: 100, n_rules: 250, ..Default::default() };
        m.compiled(&full, Duration::from_millis(3), 1);
        let incr = CompileStats { n_datapaths: 2, n_flows: 104, n_compiled: 4, n_rules: 260, ..Default::default() };
        m.compiled(&incr, Duration::from_micros(150), 0);
        m.compiled(&incr, Duration::from_micros(150), 0);
        m.published(7, Duration::from_micros(500));
        m.publish_failed();
        m.set_agent(&AgentStats { n_claims: 3, n_txns: 5, ..Default::default() });
        let (t, _) = m.render();
        let count = |kind: &str| sample(&t, &format!("petrel_ovn_compile_duration_seconds_count{{kind=\"{kind}\"}}"));
        assert_eq!(count("full"), Some(1.0), "{t}");
        assert_eq!(count("incremental"), Some(2.0), "{t}");
        assert_eq!(sample(&t, r#"petrel_ovn_compile_duration_seconds_sum{kind="full"}"#), Some(0.003), "{t}");
        // 3 ms falls in the buckets from 0.0001 * 2.5^4 = 3.9 ms up, not below.
        assert_eq!(sample(&t, r#"petrel_ovn_compile_duration_seconds_bucket{kind="full",le="0.0015625"}"#), Some(0.0));
        assert_eq!(sample(&t, r#"petrel_ovn_compile_duration_seconds_bucket{kind="full",le="0.00390625"}"#), Some(1.0));
        assert_eq!(sample(&t, "petrel_ovn_flows_compiled_total "), Some(108.0), "{t}");
        assert_eq!(sample(&t, "petrel_ovn_logical_flows "), Some(104.0));
        assert_eq!(sample(&t, "petrel_ovn_rules "), Some(260.0));
        assert_eq!(sample(&t, "petrel_ovn_refusals "), Some(0.0), "the last compile's, not a sum");
        assert_eq!(sample(&t, "petrel_ovn_snapshots_published_total "), Some(1.0));
        assert_eq!(sample(&t, "petrel_ovn_snapshot_publish_errors_total "), Some(1.0));
        assert_eq!(sample(&t, "petrel_ovn_tables_generation "), Some(7.0));
        assert_eq!(sample(&t, "petrel_ovn_claims_total "), Some(3.0), "{t}");
        assert_eq!(sample(&t, "petrel_ovn_southbound_transactions_total "), Some(5.0));
    }
}
