//! `scan --processes`: AccessKeys in running processes' environments (`/proc/PID/environ`)
//! and command lines (`/proc/PID/cmdline`), with the pid, the executable (`/proc/PID/exe`) and
//! the systemd unit (`/proc/PID/cgroup`) holding them: the "which program uses it" step.
//!
//! Other users' processes need root; the ones that cannot be read are counted.

use std::fmt;
use std::fs;
use std::path::Path;

use super::detect::{Detector, SecretWindow};
use super::{Location, Record};

/// Unit suffixes recognized in a cgroup path.
const UNIT_SUFFIXES: [&str; 2] = [".service", ".scope"];

/// What the process scan saw.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Stats {
    processes: u64,
    unreadable: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} processes scanned; {} environments unreadable (permission denied)",
            self.processes, self.unreadable
        )?;
        if self.unreadable > 0 {
            f.write_str("; other users' processes need root")?;
        }
        Ok(())
    }
}

/// Scans every process but this one. An environment is searched as one variable per line
/// (line N = the N-th variable) with the secret window the whole environment; a command line
/// as one line (arguments joined by spaces).
pub(crate) fn scan(detector: &Detector) -> (Vec<Record>, Stats) {
    scan_under(detector, Path::new("/proc"), std::process::id())
}

/// [`scan`] over a `/proc`-shaped directory, skipping the pid `own`.
pub(crate) fn scan_under(detector: &Detector, proc: &Path, own: u32) -> (Vec<Record>, Stats) {
    let mut stats = Stats::default();
    let mut records = Vec::new();
    let Ok(entries) = fs::read_dir(proc) else {
        eprintln!("ecs-ak-audit scan: cannot list {}", proc.display());
        return (records, stats);
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid| *pid != own)
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let dir = proc.join(pid.to_string());
        stats.processes += 1;
        let mut found = Vec::new();
        match fs::read(dir.join("environ")) {
            Ok(mut environ) => {
                replace_nul(&mut environ, b'\n');
                let hits = detector.find(&environ, SecretWindow::Anywhere);
                found.extend(hits.into_iter().map(|f| ("environ", f)));
            }
            // Kernel threads have no environment (ESRCH), nor have processes that just exited.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => stats.unreadable += 1,
            Err(_) => {}
        }
        if let Ok(mut cmdline) = fs::read(dir.join("cmdline")) {
            replace_nul(&mut cmdline, b' ');
            let hits = detector.find(&cmdline, SecretWindow::Anywhere);
            found.extend(hits.into_iter().map(|f| ("cmdline", f)));
        }
        if found.is_empty() {
            continue;
        }
        let exe = fs::read_link(dir.join("exe")).ok();
        let unit = fs::read_to_string(dir.join("cgroup"))
            .ok()
            .and_then(|c| unit_of(&c));
        records.extend(found.into_iter().map(|(source, finding)| Record {
            location: Location::Process {
                pid,
                exe: exe.clone(),
                unit: unit.clone(),
                source,
            },
            finding,
        }));
    }
    (records, stats)
}

fn replace_nul(buf: &mut [u8], with: u8) {
    for c in buf.iter_mut().filter(|c| **c == 0) {
        *c = with;
    }
}

/// The systemd unit in `/proc/PID/cgroup` text: the last path component ending in `.service`
/// or `.scope`, from the unified (`0::`) line or the v1 `name=systemd` line.
pub(crate) fn unit_of(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            (controllers.is_empty() || controllers == "name=systemd").then_some(path)
        })
        .flat_map(|path| path.rsplit('/'))
        .find(|part| UNIT_SUFFIXES.iter().any(|s| part.ends_with(s)))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::key::fake::{ltai, token};

    #[test]
    fn units_from_cgroup_v2_and_v1() {
        assert_eq!(
            unit_of("0::/system.slice/app.service\n").as_deref(),
            Some("app.service")
        );
        assert_eq!(
            unit_of("0::/user.slice/user-0.slice/session-3.scope\n").as_deref(),
            Some("session-3.scope")
        );
        let v1 = "12:memory:/x\n1:name=systemd:/system.slice/cron.service\n";
        assert_eq!(unit_of(v1).as_deref(), Some("cron.service"));
        assert_eq!(unit_of("0::/\n"), None);
        assert_eq!(
            unit_of("0::/system.slice/docker-1.scope/app.service/x\n").as_deref(),
            Some("app.service")
        );
    }

    #[test]
    fn fake_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        let (id, secret) = (ltai(40, 20), token(41, 30));
        let p = dir.path().join("42");
        fs::create_dir(&p).unwrap();
        let environ = format!("HOME=/root\0AK={id}\0A=1\0B=2\0C=3\0D=4\0SK={secret}\0");
        fs::write(p.join("environ"), environ).unwrap();
        fs::write(p.join("cmdline"), "app\0--verbose\0").unwrap();
        fs::write(p.join("cgroup"), "0::/system.slice/app.service\n").unwrap();
        let locked = dir.path().join("7");
        fs::create_dir(&locked).unwrap();
        fs::create_dir(locked.join("environ")).unwrap(); // reading a directory: not EACCES
        fs::create_dir(dir.path().join("8")).unwrap(); // no environ: like a process that exited
        fs::create_dir(dir.path().join("self")).unwrap();
        let (records, stats) = scan_under(&Detector::new(), dir.path(), 1);
        assert_eq!((stats.processes, stats.unreadable), (3, 0));
        assert_eq!(records.len(), 1);
        let Location::Process {
            pid, unit, source, ..
        } = &records[0].location
        else {
            panic!("not a process finding");
        };
        assert_eq!(
            (*pid, unit.as_deref(), *source),
            (42, Some("app.service"), "environ")
        );
        assert_eq!(records[0].finding.line, 2);
        assert_eq!(records[0].finding.secret_line, Some(7));
    }
}
