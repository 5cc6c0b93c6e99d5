//! The baseline: `nsd` serving the same A records from a zone file, loaded like svcnet-dns.

use super::*;

pub(super) fn run_nsd(
    args: &Args,
    dir: &Path,
    queries: &Path,
) -> anyhow::Result<((PerfResult, PerfResult), u64)> {
    use std::fmt::Write as _;
    let mut zone = String::from(
        "$ORIGIN cluster.local.\n$TTL 5\n@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5\n@ IN NS ns.dns.cluster.local.\nns.dns IN A 127.0.0.1\n",
    );
    for i in 0..args.services {
        let (ns, name) = names(i);
        writeln!(zone, "{name}.{ns}.svc IN A {}", cluster_ip(i))?;
    }
    std::fs::write(dir.join("cluster.local.zone"), zone)?;
    let port = free_port()?;
    let conf = format!(
        "server:\n  ip-address: 127.0.0.1@{port}\n  server-count: 1\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  database: \"\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  logfile: \"{d}/nsd.log\"\n  rrl-ratelimit: 0\n  verbosity: 0\nremote-control:\n  control-enable: no\nzone:\n  name: cluster.local\n  zonefile: cluster.local.zone\n",
        d = dir.display()
    );
    let conf_path = dir.join("nsd.conf");
    std::fs::write(&conf_path, conf)?;
    let mut child = Command::new("nsd")
        .arg("-d")
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nsd (apt-get install nsd)")?;
    // Wait until it answers.
    let probe = dir.join("probe.txt");
    std::fs::write(&probe, "svc-0.ns-0.svc.cluster.local A\n")?;
    let mut up = false;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(100));
        let ok = Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &port.to_string(),
                "+short",
                "+time=1",
                "+tries=1",
            ])
            .arg("svc-0.ns-0.svc.cluster.local")
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false);
        if ok {
            up = true;
            break;
        }
    }
    if !up {
        let _ = child.kill();
        bail!(
            "nsd did not answer; its log:\n{}",
            std::fs::read_to_string(dir.join("nsd.log")).unwrap_or_default()
        );
    }
    let res = max_and_half(args, port, queries);
    // nsd forks its server process; the pidfile names the main one. Sum every nsd process of
    // this run: the main process's children share its process group.
    let mut rss = rss_kib(child.id());
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Field 4 is the parent pid.
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            if ppid == Some(child.id()) {
                rss += rss_kib(pid);
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok((res?, rss))
}
