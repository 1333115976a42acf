//! Samples, and the one table they are summed up in.
use std::io::Write;
use std::path::Path;

pub struct Sample {
    pub op: String,
    pub size_mib: u64,
    pub storage: String,
    pub rep: usize,
    pub secs: f64,
}

#[derive(Default)]
pub struct Samples(pub Vec<Sample>);

impl Samples {
    pub fn add(&mut self, op: &str, size_mib: u64, storage: &str, rep: usize, secs: f64) {
        self.0.push(Sample { op: op.into(), size_mib, storage: storage.into(), rep, secs });
    }

    /// (median, minimum) of one operation's samples, if it has any.
    pub fn stats(&self, op: &str, size_mib: u64, storage: &str) -> Option<(f64, f64)> {
        let mut v: Vec<f64> = self.0.iter().filter(|s| s.op == op && s.size_mib == size_mib && s.storage == storage).map(|s| s.secs).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some((median, v[0]))
    }

    pub fn median(&self, op: &str, size_mib: u64, storage: &str) -> Option<f64> {
        self.stats(op, size_mib, storage).map(|s| s.0)
    }

    pub fn write_csv(&self, path: &Path) -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        writeln!(f, "op,size_mib,storage,rep,seconds")?;
        for s in &self.0 {
            writeln!(f, "\"{}\",{},{},{},{:.6}", s.op.replace('"', "'"), s.size_mib, s.storage, s.rep, s.secs)?;
        }
        Ok(())
    }
}

/// One line of the table.
pub struct Row {
    pub op: String,
    /// MiB of process memory (0: not a size-dependent row).
    pub size_mib: u64,
    pub storage: String,
    /// (median, minimum) seconds.
    pub stats: Option<(f64, f64)>,
    /// Whether GB/s (process memory size / median) means something for this row.
    pub rate: bool,
    /// (name, median seconds) of the baselines this row is compared with.
    pub base: Vec<(String, f64)>,
    pub note: String,
}

impl Row {
    pub fn new(op: impl Into<String>, size_mib: u64, storage: &str) -> Row {
        Row { op: op.into(), size_mib, storage: storage.into(), stats: None, rate: false, base: Vec::new(), note: String::new() }
    }

    /// A row of measured samples of `key`.
    pub fn of(s: &Samples, key: &str, label: impl Into<String>, size_mib: u64, storage: &str) -> Row {
        Row { stats: s.stats(key, size_mib, storage), ..Row::new(label, size_mib, storage) }
    }

    pub fn rate(mut self) -> Row {
        self.rate = true;
        self
    }

    /// Compares with the median of `key` (same size and storage), if measured.
    pub fn vs(mut self, s: &Samples, key: &str, name: &str) -> Row {
        if let Some(m) = s.median(key, self.size_mib, &self.storage) {
            self.base.push((name.into(), m));
        }
        self
    }

    pub fn note(mut self, n: impl Into<String>) -> Row {
        let n = n.into();
        if !self.note.is_empty() && !n.is_empty() {
            self.note.push_str("; ");
        }
        self.note.push_str(&n);
        self
    }
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

/// Prints the table: operation, size, storage, median and min seconds, GB/s (process memory
/// over the median), baseline(s) and ratio(s) (baseline median / this median: above 1, crest
/// is faster), notes.
pub fn print(rows: &[Row]) {
    let head = ["operation", "MiB", "storage", "median s", "min s", "GB/s", "baseline", "ratio", "notes"];
    let mut cells: Vec<[String; 9]> = vec![head.map(String::from)];
    for r in rows {
        let (med, min) = r.stats.map_or(("-".into(), "-".into()), |(m, n)| (secs(m), secs(n)));
        let gbs = match r.stats {
            Some((m, _)) if r.rate && m > 0.0 => format!("{:.2}", (r.size_mib << 20) as f64 / m / 1e9),
            _ => String::new(),
        };
        let base = r.base.iter().map(|b| b.0.clone()).collect::<Vec<_>>().join(" / ");
        let ratio = match r.stats {
            Some((m, _)) if m > 0.0 => r.base.iter().map(|b| format!("{:.2}", b.1 / m)).collect::<Vec<_>>().join(" / "),
            _ => String::new(),
        };
        let size = if r.size_mib == 0 { "-".into() } else { r.size_mib.to_string() };
        cells.push([r.op.clone(), size, r.storage.clone(), med, min, gbs, base, ratio, r.note.clone()]);
    }
    let mut w = [0usize; 9];
    for c in &cells {
        for (i, s) in c.iter().enumerate() {
            w[i] = w[i].max(s.chars().count());
        }
    }
    for (n, c) in cells.iter().enumerate() {
        let mut line = String::new();
        for (i, s) in c.iter().enumerate() {
            let pad = w[i] - s.chars().count();
            let right = matches!(i, 1 | 3 | 4 | 5);
            if i > 0 {
                line.push_str("  ");
            }
            if right {
                line.push_str(&" ".repeat(pad));
                line.push_str(s);
            } else if i < 8 {
                line.push_str(s);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str(s);
            }
        }
        println!("{}", line.trim_end());
        if n == 0 {
            println!("{}", "-".repeat(w.iter().sum::<usize>() + 16));
        }
    }
}

fn secs(s: f64) -> String {
    if s < 0.1 {
        format!("{s:.4}")
    } else {
        format!("{s:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_minimum() {
        let mut s = Samples::default();
        for (rep, v) in [3.0, 1.0, 2.0].into_iter().enumerate() {
            s.add("dump", 1024, "/dev/shm", rep, v);
        }
        s.add("dump", 4096, "/dev/shm", 0, 9.0);
        assert_eq!(s.stats("dump", 1024, "/dev/shm"), Some((2.0, 1.0)));
        s.add("dump", 1024, "/dev/shm", 3, 4.0);
        assert_eq!(s.stats("dump", 1024, "/dev/shm"), Some((2.5, 1.0)));
        assert_eq!(s.stats("restore", 1024, "/dev/shm"), None);
    }

    #[test]
    fn ratios_compare_medians() {
        let mut s = Samples::default();
        s.add("memcpy", 1, "x", 0, 2.0);
        s.add("dump", 1, "x", 0, 1.0);
        let r = Row::of(&s, "dump", "dump", 1, "x").vs(&s, "memcpy", "memcpy").vs(&s, "absent", "absent");
        assert_eq!(r.base, vec![("memcpy".to_string(), 2.0)]);
    }
}
