//! Prometheus metrics (`obzvon_` prefix), served at `/metrics`. The recorder is process-wide
//! and installed once, so several apps in one test process share it.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Connect latency buckets: the goal is p99 under 100 ms.
const LATENCY_BUCKETS: [f64; 12] = [0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0];

pub const CONNECT_LATENCY: &str = "obzvon_connect_latency_seconds";
pub const ATTEMPTS: &str = "obzvon_attempts_total";

pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(CONNECT_LATENCY.to_owned()), &LATENCY_BUCKETS)
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist in tests that build one themselves; keep ours readable.
            let _ = metrics::set_global_recorder(recorder);
            metrics::describe_histogram!(
                CONNECT_LATENCY,
                metrics::Unit::Seconds,
                "Customer answer to customer and operator in one bridge"
            );
            metrics::describe_counter!(ATTEMPTS, "Finished attempts by campaign, status and result");
            handle
        })
        .clone()
}
