//! `process_*` metrics (the names every Prometheus client library uses),
//! read from `/proc/self` on each scrape.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The process metrics, in their own registry (no `vdh_edge_` prefix).
#[derive(Debug)]
pub(crate) struct Process {
    pub(crate) registry: Registry,
    cpu: Counter<f64, std::sync::atomic::AtomicU64>,
    rss: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    start: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Process {
    pub(crate) fn new() -> Process {
        let mut registry = Registry::default();
        let p = Process {
            cpu: Counter::default(),
            rss: Gauge::default(),
            open_fds: Gauge::default(),
            max_fds: Gauge::default(),
            start: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            p.cpu.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            p.rss.clone(),
        );
        registry.register(
            "process_open_fds",
            "Number of open file descriptors",
            p.open_fds.clone(),
        );
        registry.register(
            "process_max_fds",
            "Maximum number of open file descriptors",
            p.max_fds.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            p.start.clone(),
        );
        Process { registry, ..p }
    }

    /// Reads `/proc/self` into the metrics (Linux; elsewhere they stay 0).
    pub(crate) fn update(&self) {
        // SAFETY: sysconf and getrlimit with valid arguments.
        let (tick, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let (tick, page) = (tick.max(1) as f64, page.max(1));
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name (which may hold spaces).
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            // utime, stime, starttime are fields 14, 15, 22 (1-based, with
            // pid and comm first): 11, 12, 19 here.
            let cpu = (num(11) + num(12)) as f64 / tick;
            let delta = cpu - self.cpu.get();
            if delta > 0.0 {
                self.cpu.inc_by(delta);
            }
            if let Some(boot) = boot_time() {
                self.start.set(boot + num(19) as f64 / tick);
            }
            // RSS in pages is field 24: 21 here.
            self.rss
                .set(i64::try_from(num(21)).unwrap_or(0).saturating_mul(page));
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(i64::try_from(dir.count()).unwrap_or(0));
        }
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into `lim`.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            self.max_fds
                .set(i64::try_from(lim.rlim_cur).unwrap_or(i64::MAX));
        }
    }
}

/// The boot time (`btime` of `/proc/stat`).
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}
