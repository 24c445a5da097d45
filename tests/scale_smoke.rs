//! Keeps the scale benchmark working: the same harness as `cargo bench
//! --bench scale`, at N = 100 for a few seconds, and one simulated hour of
//! storage. It checks that each part measured something; the figures
//! themselves are printed, never asserted (docs/performance.md has them).

#[path = "../benches/shared/cpu.rs"]
mod cpu;
#[path = "../benches/scale/harness.rs"]
mod harness;
#[path = "../benches/scale/monit.rs"]
mod monit;
#[path = "../benches/scale/storage.rs"]
mod storage;

use std::time::Duration;

#[test]
fn the_scale_benchmark_runs_end_to_end() {
    let mut o = harness::Opts::new(
        100,
        Duration::from_secs(1),
        env!("CARGO_BIN_EXE_connwatch").into(),
    );
    o.warmup = Duration::from_secs(2);
    o.window = Duration::from_secs(3);
    o.reload = true;
    let r = harness::run(&o);
    println!("{}", harness::table(std::slice::from_ref(&r)));
    assert!(r.ready_ms.is_finite(), "no READY=1 seen");
    assert!(r.made_healthy > 0 && r.cpu_s >= 0.0, "{r:?}");
    assert!(r.vm_hwm_kib > 0, "no VmHWM read");
    assert!(r.reload_ms.is_some(), "the reload was not timed");
    assert!(r.floor_even_us.is_some_and(|v| v > 0.0));
    assert!(r.floor_batched_us.is_some_and(|v| v > 0.0));

    let d = storage::simulate(20, Duration::from_secs(10), 0.98, 1);
    println!("{}", storage::table(std::slice::from_ref(&d)));
    assert_eq!(d.probes, 20 * 360);
    assert!(d.bytes_end > d.bytes_empty, "nothing was stored");
}
