//! Logging through tracing: `RUST_LOG`-style filtering, pretty for people
//! or JSON for log pipelines. Installed once, at start-up.

pub mod metrics;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Later calls (tests) are ignored.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,hyper=warn"));
    // Colours only for a person at a terminal, never into a file or a pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// A budget for log lines that a client can cause (refused connections,
/// refused tokens): at most `per_second` lines a second, and the first line
/// after a quiet spell says how many were left out. It keeps a flood from
/// filling the disk without hiding that the flood happened.
#[derive(Debug)]
pub struct LogBudget {
    per_second: u32,
    state: std::sync::Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    window: std::time::Instant,
    used: u32,
    suppressed: u64,
}

impl LogBudget {
    pub fn per_second(per_second: u32) -> Self {
        Self {
            per_second,
            state: std::sync::Mutex::new(BudgetState {
                window: std::time::Instant::now(),
                used: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(lines left out since the last admitted one)` when a line may
    /// be written now, `None` when it must be left out.
    pub fn admit(&self) -> Option<u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        if now.duration_since(state.window) >= std::time::Duration::from_secs(1) {
            state.window = now;
            state.used = 0;
        }
        if state.used < self.per_second {
            state.used += 1;
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_admits_its_rate_and_counts_the_rest() {
        let budget = LogBudget::per_second(3);
        assert_eq!(budget.admit(), Some(0));
        assert_eq!(budget.admit(), Some(0));
        assert_eq!(budget.admit(), Some(0));
        for _ in 0..10 {
            assert_eq!(budget.admit(), None);
        }
        // The next window's first line reports what was left out.
        budget.state.lock().unwrap().window -= std::time::Duration::from_secs(1);
        assert_eq!(budget.admit(), Some(10));
        assert_eq!(budget.admit(), Some(0));
        let silent = LogBudget::per_second(0);
        assert_eq!(silent.admit(), None);
    }
}
